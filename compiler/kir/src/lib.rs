//! dlc-kir: the kernel IR, the lowered program that every dlc backend translates.
//!
//! A [`Program`] holds buffers (inputs, outputs, constants, arena slices whose sizes are
//! [`Expr`]s), the symbols it is parameterised by, kernels, and a schedule of kernel
//! calls and regions (`if`, `loop`). A [`Kernel`] is a structured body of loops whose
//! extents are expressions over symbols and outer loop variables, SSA values over
//! scalar and vector types, loads and stores (aligned, masked), and named math
//! functions and target intrinsics.
//!
//! Every construct has one meaning, defined by [`interp`]; [`verify`] checks a kernel;
//! [`print`] writes the canonical text form and [`parse`] reads it back.
//!
//! Invariant: knows nothing of LLVM, CUDA or ONNX (no dependency on any of them).
#![warn(missing_docs)]

/// Index expressions (the dlc-sym crate, shared with dlc-ir's dims).
pub mod expr {
    pub use dlc_sym::*;
}
pub mod interp;
pub mod intrinsic;
mod ir;
pub mod parse;
pub mod print;
pub mod transform;
pub mod verify;

pub use expr::Expr;
pub use ir::*;

/// The body of a loop nest, called once with the loop variables.
type NestBody<'b> = Option<Box<dyn FnOnce(&mut KernelBuilder, &[Expr]) + 'b>>;

/// Builds a kernel statement by statement, numbering values, loop variables and locals.
pub struct KernelBuilder {
    name: String,
    params: Vec<Access>,
    stack: Vec<Vec<Stmt>>,
    next_val: u32,
    next_var: u32,
    next_local: u32,
    tables: Vec<Table>,
    scratch: Vec<Scratch>,
    data: Vec<Data>,
    block: Option<Block>,
    shared: Vec<Scratch>,
}

impl KernelBuilder {
    /// A kernel `name` with pointer parameters of the given access.
    pub fn new(name: impl Into<String>, params: &[Access]) -> Self {
        KernelBuilder {
            name: name.into(),
            params: params.to_vec(),
            stack: vec![Vec::new()],
            next_val: 0,
            next_var: 0,
            next_local: 0,
            tables: Vec::new(),
            scratch: Vec::new(),
            data: Vec::new(),
            block: None,
            shared: Vec::new(),
        }
    }

    fn push(&mut self, s: Stmt) {
        self.stack.last_mut().expect("a body is open").push(s);
    }

    /// `%vN = inst`, returning `N`.
    pub fn let_(&mut self, inst: Inst) -> ValId {
        let v = self.next_val;
        self.next_val += 1;
        self.push(Stmt::Let(v, inst));
        v
    }

    /// A scalar or vector load of `ty` from `param` at element `index`.
    pub fn load(&mut self, ty: Ty, param: u32, index: Expr, align: u32) -> ValId {
        self.let_(Inst::Load { ty, param, index, align, mask: None })
    }

    /// Stores `value` to `param` at element `index`.
    pub fn store(&mut self, param: u32, index: Expr, value: ValId, align: u32) {
        self.push(Stmt::Store { param, index, value, align, mask: None });
    }

    /// Any statement.
    pub fn stmt(&mut self, s: Stmt) {
        self.push(s);
    }

    /// `for var in lo..hi { body(var) }`; `body` gets the loop variable as an expression.
    pub fn for_(&mut self, lo: Expr, hi: Expr, kind: LoopKind, body: impl FnOnce(&mut Self, Expr)) {
        let var = self.next_var;
        self.next_var += 1;
        self.stack.push(Vec::new());
        body(self, Expr::var(var));
        let b = self.stack.pop().expect("pushed");
        self.push(Stmt::For { var, lo, hi, kind, body: b });
    }

    /// `if cond { then } else { els }`.
    pub fn if_(&mut self, cond: ValId, then: impl FnOnce(&mut Self), els: impl FnOnce(&mut Self)) {
        self.stack.push(Vec::new());
        then(self);
        let t = self.stack.pop().expect("pushed");
        self.stack.push(Vec::new());
        els(self);
        let e = self.stack.pop().expect("pushed");
        self.push(Stmt::If { cond, then: t, els: e });
    }

    /// A loop nest over `extents` (outermost first) of one kind.
    pub fn nest(&mut self, extents: &[Expr], kind: LoopKind, body: impl FnOnce(&mut Self, &[Expr])) {
        fn go(b: &mut KernelBuilder, ext: &[Expr], kind: LoopKind, idx: &mut Vec<Expr>, body: &mut NestBody<'_>) {
            match ext.split_first() {
                None => (body.take().expect("runs once"))(b, idx),
                Some((n, rest)) => b.for_(Expr::c(0), n.clone(), kind, |b, i| {
                    idx.push(i);
                    go(b, rest, kind, idx, body);
                }),
            }
        }
        let mut body: NestBody<'_> = Some(Box::new(body));
        go(self, extents, kind, &mut Vec::new(), &mut body)
    }

    /// An `i64` constant.
    pub fn i64(&mut self, v: i64) -> ValId {
        self.let_(Inst::Const { ty: Ty::scalar(Elem::I64), lit: Lit::Int(v) })
    }

    /// `op a, b`.
    pub fn bin(&mut self, op: BinOp, a: ValId, b: ValId) -> ValId {
        self.let_(Inst::Bin(op, a, b))
    }

    /// `cmp op a, b`.
    pub fn cmp(&mut self, op: CmpOp, a: ValId, b: ValId) -> ValId {
        self.let_(Inst::Cmp(op, a, b))
    }

    /// `c ? a : b`.
    pub fn select(&mut self, c: ValId, a: ValId, b: ValId) -> ValId {
        self.let_(Inst::Select(c, a, b))
    }

    /// An index expression as an `i64` value.
    pub fn index(&mut self, e: Expr) -> ValId {
        self.let_(Inst::Index(e))
    }

    /// A new local of `ty` initialised to `init`.
    pub fn local(&mut self, ty: Ty, init: ValId) -> u32 {
        let l = self.next_local;
        self.next_local += 1;
        self.push(Stmt::Local(l, ty, init));
        l
    }

    /// The table named `name` (`%tN`), declared with `values` the first time.
    pub fn table(&mut self, name: &str, elem: Elem, values: impl FnOnce() -> Vec<Lit>) -> u32 {
        if let Some(i) = self.tables.iter().position(|t| t.name == name) {
            return i as u32;
        }
        self.tables.push(Table { name: name.to_string(), elem, values: values().into() });
        self.tables.len() as u32 - 1
    }

    /// A new scratch array of `len` elements of `elem`; returns its memory index (for
    /// loads, stores and copies, after the parameters' and the constant arrays').
    pub fn scratch(&mut self, elem: Elem, len: u64) -> u32 {
        assert!(self.shared.is_empty(), "kir: scratch arrays are declared before shared arrays");
        self.scratch.push(Scratch { elem, len });
        (self.params.len() + self.data.len() + self.scratch.len() - 1) as u32
    }

    /// A new constant array `name` of `elem`s (little-endian `bytes`); returns its
    /// memory index (for loads). Constant arrays are numbered before scratch arrays, so
    /// a kernel declares them first (a panic otherwise: a lowering's bug).
    pub fn data(&mut self, name: &str, elem: Elem, bytes: impl Into<std::sync::Arc<[u8]>>) -> u32 {
        assert!(self.scratch.is_empty(), "kir: constant arrays are declared before scratch arrays");
        self.data.push(Data { name: name.to_string(), elem, bytes: bytes.into() });
        (self.params.len() + self.data.len() - 1) as u32
    }

    /// Makes this a CUDA block kernel of `threads` threads per block on `grid` blocks;
    /// returns the block index along x, y and z.
    pub fn block(&mut self, threads: u32, grid: [Expr; 3]) -> [Expr; 3] {
        assert!(self.block.is_none(), "kir: a kernel has one launch");
        let vars = [0, 1, 2].map(|k| self.next_var + k);
        self.next_var += 3;
        self.block = Some(Block { vars, grid, threads });
        vars.map(Expr::var)
    }

    /// A new shared array of `len` elements of `elem` (block kernels); returns its
    /// memory index (after the scratch arrays', so a kernel declares it last).
    pub fn shared(&mut self, elem: Elem, len: u64) -> u32 {
        self.shared.push(Scratch { elem, len });
        (self.params.len() + self.data.len() + self.scratch.len() + self.shared.len() - 1) as u32
    }

    /// `for t in 0..threads threads { body(t) }`: a region of a block kernel, ended by a
    /// barrier.
    pub fn threads(&mut self, body: impl FnOnce(&mut Self, Expr)) {
        let n = self.block.as_ref().expect("kir: threads regions are in block kernels").threads;
        self.for_(Expr::c(0), Expr::c(n as i64), LoopKind::Threads, body)
    }

    /// The kernel.
    pub fn finish(mut self) -> Kernel {
        let body = self.stack.pop().expect("the kernel body");
        Kernel {
            name: self.name,
            params: self.params,
            tables: self.tables,
            scratch: self.scratch,
            data: self.data,
            block: self.block,
            shared: self.shared,
            body,
        }
    }
}
