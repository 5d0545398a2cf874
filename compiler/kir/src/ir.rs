//! The data structures of kir: programs, kernels, statements and instructions.
//!
//! A kernel is structured (no basic blocks): a body of statements where `for` and `if`
//! hold nested bodies, as in Halide's lowered `Stmt` and MLIR's `scf`. Values are SSA:
//! each `let` defines `%vN` once, visible in the rest of its body and in nested bodies.
//! Mutable state lives in locals (`%lN`, a stack slot on a CPU, a register after
//! promotion). Memory is reached through the kernel's pointer parameters (`%pN`) at
//! element indices that are [`Expr`]s over symbols, loop variables and integer values.
use crate::expr::Expr;
use std::sync::Arc;

/// A machine element type. Signedness lives in the operations (as in LLVM and CLIF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Elem {
    /// A boolean (comparison results, masks).
    I1,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// IEEE half.
    F16,
    /// IEEE single.
    F32,
    /// IEEE double.
    F64,
}

impl Elem {
    /// Every element type, in text order.
    pub const ALL: [Elem; 8] = [Elem::I1, Elem::I8, Elem::I16, Elem::I32, Elem::I64, Elem::F16, Elem::F32, Elem::F64];

    /// Bits of one element.
    pub fn bits(self) -> u32 {
        match self {
            Elem::I1 => 1,
            Elem::I8 => 8,
            Elem::I16 | Elem::F16 => 16,
            Elem::I32 | Elem::F32 => 32,
            Elem::I64 | Elem::F64 => 64,
        }
    }

    /// Bytes one element occupies in memory (`i1` takes a byte).
    pub fn bytes(self) -> u32 {
        self.bits().div_ceil(8)
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, Elem::F16 | Elem::F32 | Elem::F64)
    }

    /// The text name (`i32`, `f32`).
    pub fn name(self) -> &'static str {
        match self {
            Elem::I1 => "i1",
            Elem::I8 => "i8",
            Elem::I16 => "i16",
            Elem::I32 => "i32",
            Elem::I64 => "i64",
            Elem::F16 => "f16",
            Elem::F32 => "f32",
            Elem::F64 => "f64",
        }
    }

    /// The integer type of `bytes` bytes (data movement moves elements as integers).
    pub fn int_of_bytes(bytes: usize) -> Option<Elem> {
        Some(match bytes {
            1 => Elem::I8,
            2 => Elem::I16,
            4 => Elem::I32,
            8 => Elem::I64,
            _ => return None,
        })
    }
}

/// A scalar (`lanes == 1`) or vector type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ty {
    /// The element type.
    pub elem: Elem,
    /// The number of lanes (1: a scalar).
    pub lanes: u32,
}

impl Ty {
    /// A scalar of `elem`.
    pub fn scalar(elem: Elem) -> Ty {
        Ty { elem, lanes: 1 }
    }

    /// A vector of `lanes` `elem`s.
    pub fn vec(elem: Elem, lanes: u32) -> Ty {
        Ty { elem, lanes }
    }

    /// The same shape with another element type.
    pub fn with_elem(self, elem: Elem) -> Ty {
        Ty { elem, lanes: self.lanes }
    }
}

/// An SSA value of a kernel (`%vN`).
pub type ValId = u32;

/// A binary operation. Integer arithmetic wraps (two's complement); dividing by zero is
/// an error of the program (the interpreter reports it; a kernel must guard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    SDiv,
    UDiv,
    SRem,
    URem,
    And,
    Or,
    Xor,
    /// Shifts take the amount modulo the bit width.
    Shl,
    LShr,
    AShr,
    SMin,
    SMax,
    UMin,
    UMax,
    FAdd,
    FSub,
    FMul,
    FDiv,
    /// C's fmod (the dividend's sign).
    FRem,
    /// IEEE minNum: a NaN operand is dropped.
    FMin,
    /// IEEE maxNum: a NaN operand is dropped.
    FMax,
    /// The magnitude of the first operand with the sign of the second.
    CopySign,
}

/// A unary operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum UnOp {
    Neg,
    Not,
    FNeg,
    FAbs,
    Sqrt,
    Floor,
    Ceil,
    Trunc,
    RoundEven,
}

/// A comparison; the result is `i1` with the operands' lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum CmpOp {
    Eq,
    Ne,
    Slt,
    Sle,
    Sgt,
    Sge,
    Ult,
    Ule,
    Ugt,
    Uge,
    /// Ordered float comparisons: false when either operand is NaN.
    FOeq,
    FOne,
    FOlt,
    FOle,
    FOgt,
    FOge,
    /// Unordered: true when either operand is NaN.
    FUno,
    FUne,
    /// Unordered or less than (true for NaN operands).
    FUlt,
    /// Unordered or greater than.
    FUgt,
}

/// A conversion between element types (same lanes; a bitcast may regroup them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum CastOp {
    Sext,
    Zext,
    Trunc,
    FpExt,
    FpTrunc,
    /// Saturating float to signed integer; NaN gives 0.
    FpToSiSat,
    /// Saturating float to unsigned integer; NaN gives 0.
    FpToUiSat,
    /// Float to signed integer, truncating. For NaN or a value out of the type's range
    /// the result is unspecified (LLVM's poison): a kernel uses it only where it has
    /// bounded the value, or discards the result with a `select` (the interpreter
    /// gives the saturated value).
    FpToSi,
    /// Float to unsigned integer, truncating; as [`CastOp::FpToSi`] out of range.
    FpToUi,
    SiToFp,
    UiToFp,
    /// Reinterprets the bits (same total width): lane by lane, or regrouping the lanes
    /// (`i32x8` to `i8x32`: lane 0's low byte is lane 0 of the result, little-endian).
    Bitcast,
}

/// A reduction of a vector's lanes to a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ReduceOp {
    Add,
    /// In lane order (deterministic).
    FAdd,
    FMin,
    FMax,
    SMin,
    SMax,
}

/// A literal of a constant. Two literals are equal when they are the same bits (as
/// LLVM's constants): `-0.0` is not `0.0`, and a NaN equals itself, so kernels that
/// compare equal compute the same thing.
#[derive(Debug, Clone, Copy)]
pub enum Lit {
    /// An integer (its low bits are the value of a narrower type).
    Int(i64),
    /// A float (rounded to the type).
    Float(f64),
}

impl PartialEq for Lit {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Lit::Int(a), Lit::Int(b)) => a == b,
            (Lit::Float(a), Lit::Float(b)) => a.to_bits() == b.to_bits(),
            _ => false,
        }
    }
}

/// An instruction: what a `let` computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Inst {
    /// A constant (every lane, for a vector type).
    Const {
        /// Its type.
        ty: Ty,
        /// Its value.
        lit: Lit,
    },
    /// An index expression as an `i64`.
    Index(Expr),
    /// `lanes` consecutive elements of memory `param` (a parameter, or a scratch array:
    /// see [`Kernel::scratch`]) from element `index`, assuming
    /// `align` bytes of alignment; with a mask, lanes whose mask is false read 0 and
    /// touch no memory.
    Load {
        /// The loaded type.
        ty: Ty,
        /// The pointer parameter.
        param: u32,
        /// Element index (in units of `ty.elem`).
        index: Expr,
        /// Assumed alignment in bytes.
        align: u32,
        /// A lane mask (`i1` vector of `ty.lanes`).
        mask: Option<ValId>,
    },
    /// The current value of a local.
    Get(u32),
    /// A binary operation on two values of one type.
    Bin(BinOp, ValId, ValId),
    /// A unary operation.
    Un(UnOp, ValId),
    /// `a * b + c` with one rounding.
    Fma(ValId, ValId, ValId),
    /// A comparison.
    Cmp(CmpOp, ValId, ValId),
    /// `c ? a : b`, lane by lane when `c` is a vector.
    Select(ValId, ValId, ValId),
    /// A conversion to `to`.
    Cast(CastOp, ValId, Ty),
    /// A scalar in every lane of a `lanes`-lane vector.
    Splat(ValId, u32),
    /// Lane `lane` of a vector.
    Extract(ValId, u32),
    /// The vector with lane `lane` replaced by a scalar.
    Insert(ValId, ValId, u32),
    /// Lanes of `a` then `b`, picked by `mask` (indices into their concatenation).
    Shuffle(ValId, ValId, Vec<u32>),
    /// All lanes combined into one scalar.
    Reduce(ReduceOp, ValId),
    /// A math function by its C name (`expf`, `tanhf`), or one of dlc's own (`dlc.exp`):
    /// translators pick the library or the portable implementation.
    Call {
        /// Function name.
        func: String,
        /// Arguments.
        args: Vec<ValId>,
        /// Result type.
        ty: Ty,
    },
    /// A named target operation (`x86.avx512.vpdpbusd.512`), translated one to one where
    /// the target has it; a legalisation step replaces it elsewhere.
    Intrinsic {
        /// Name.
        name: String,
        /// Arguments.
        args: Vec<ValId>,
        /// Result type.
        ty: Ty,
    },
    /// The same value, opaque to optimisation (keeps LLVM from merging addresses).
    Opaque(ValId),
    /// The combination over the block's threads of element 0 of each thread's scratch
    /// array `mem` (`f32`), by warp butterflies in a fixed order (see
    /// [`crate::interp::block_reduce`]): a block-uniform `f32` value. Only in
    /// block-uniform code of a [`Block`] kernel, after the region that wrote the array;
    /// the array's contents are unspecified after it.
    BlockReduce {
        /// `fadd`, `fmax` or `fmin`.
        op: ReduceOp,
        /// A scratch array.
        mem: u32,
    },
    /// Element `index` (an integer scalar, read unsigned) of the kernel's constant table
    /// `table` (`%tN`): a scalar of the table's element type. Out of range is an error
    /// of the program.
    Lookup {
        /// The table.
        table: u32,
        /// The element index.
        index: ValId,
    },
}

/// How the iterations of a loop may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoopKind {
    /// In order, on one thread.
    Serial,
    /// Independent iterations, one element of a per-element kernel each: a CPU runs them
    /// as a loop nest, CUDA as one thread each.
    Each,
    /// Independent tasks for the CPU thread pool (`pfor`).
    Parallel,
    /// The threads of a CUDA block (only in a [`Block`] kernel, from 0 to its thread
    /// count, directly in block-uniform code): every thread runs the body with the loop
    /// variable as its index, then all of them meet at a barrier. So consecutive
    /// regions are ordered as a loop over the threads would order them, which is the
    /// meaning the interpreter and the host simulation give it.
    Threads,
}

/// A statement of a kernel body.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `%vN = inst`.
    Let(ValId, Inst),
    /// Stores a value at an element index of a memory (a parameter or a scratch array;
    /// masked lanes are not written).
    Store {
        /// The pointer parameter.
        param: u32,
        /// Element index (in units of the value's element type).
        index: Expr,
        /// The stored value.
        value: ValId,
        /// Assumed alignment in bytes.
        align: u32,
        /// A lane mask.
        mask: Option<ValId>,
    },
    /// `for var in lo..hi` (nothing when `lo >= hi`).
    For {
        /// The loop variable (`%iN`).
        var: u32,
        /// First value.
        lo: Expr,
        /// One past the last value.
        hi: Expr,
        /// How iterations may run.
        kind: LoopKind,
        /// The body.
        body: Vec<Stmt>,
    },
    /// `if cond { then } else { els }` on an `i1` scalar.
    If {
        /// The condition.
        cond: ValId,
        /// Taken when true.
        then: Vec<Stmt>,
        /// Taken when false.
        els: Vec<Stmt>,
    },
    /// Declares local `%lN` of `ty` with an initial value.
    Local(u32, Ty, ValId),
    /// Assigns a local.
    Set(u32, ValId),
    /// Copies `bytes` bytes between memories (parameters or scratch arrays; byte
    /// offsets; the ranges do not overlap).
    Memcpy {
        /// Destination parameter.
        dst: u32,
        /// Byte offset in the destination.
        dst_off: Expr,
        /// Source parameter.
        src: u32,
        /// Byte offset in the source.
        src_off: Expr,
        /// Byte count.
        bytes: Expr,
    },
}

/// How a kernel uses a pointer parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read only.
    Read,
    /// Written (and possibly read).
    Write,
}

/// A kernel: a function of pointer parameters (operands, then results) that no other
/// parameter aliases.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Its name (unique in the program).
    pub name: String,
    /// Its parameters (`%p0`, `%p1`...).
    pub params: Vec<Access>,
    /// Constant tables (`%t0`, `%t1`...), read by [`Inst::Lookup`].
    pub tables: Vec<Table>,
    /// Scratch arrays (`%s0`, `%s1`...): private memory, addressed like parameters by
    /// the memory index `params.len() + data.len() + j`. Each invocation, each task of a `parallel`
    /// loop and each CUDA thread has its own (in a block kernel, living across its regions);
    /// contents are unspecified until written.
    pub scratch: Vec<Scratch>,
    /// Constant arrays (`%d0`, `%d1`...): read-only memory the kernel carries (weights
    /// it packed at compile time), addressed by the memory index `params.len() + j`.
    /// (Data come before scratch arrays in the memory numbering.)
    pub data: Vec<Data>,
    /// For a CUDA block kernel, its launch: the kernel body is then block-uniform code
    /// run once per block, with `threads` regions inside it.
    pub block: Option<Block>,
    /// Shared arrays (`%h0`, `%h1`...) of a block kernel: one per block, seen by all its
    /// threads, after the scratch arrays in the memory numbering.
    pub shared: Vec<Scratch>,
    /// The body.
    pub body: Vec<Stmt>,
}

/// How a block kernel is launched: a grid of blocks of `threads` threads each. The
/// block's coordinates are the loop variables `vars`, bound for the whole body.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Loop variables holding the block index along x, y and z.
    pub vars: [u32; 3],
    /// The grid's extent along x, y and z (at least 1 each).
    pub grid: [Expr; 3],
    /// Threads per block (1 to 1024).
    pub threads: u32,
}

/// A constant array of a kernel: `bytes` (little-endian elements of `elem`). A
/// translator emits it as read-only data of the kernel, 64-byte aligned, named after
/// the kernel and `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Data {
    /// Its name within the kernel (`bpack`).
    pub name: String,
    /// The element type.
    pub elem: Elem,
    /// The contents.
    pub bytes: Arc<[u8]>,
}

impl Data {
    /// Its length in elements.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64 / self.elem.bytes() as u64
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A scratch array of a kernel: `len` elements of `elem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scratch {
    /// The element type.
    pub elem: Elem,
    /// Its length in elements.
    pub len: u64,
}

/// A constant table of a kernel (a decode table of an 8-bit float format): a
/// translator emits it once per module under its name, so kernels that share a table
/// share its name.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Its name (unique per content in a program: `dlc.decode.f8e4m3fn`).
    pub name: String,
    /// The element type.
    pub elem: Elem,
    /// The elements.
    pub values: Arc<[Lit]>,
}

/// A run-time dim the program is parameterised by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// Its name (as in the model: `N`, `batch`).
    pub name: String,
    /// Its smallest valid value.
    pub min: i64,
    /// `Some(max)` when a `bind` step of the schedule gives its value (computed from
    /// tensor values while the program runs), not the caller; `max` bounds it, as an
    /// expression of the other symbols (what outputs sized by it are allocated for).
    pub data: Option<Expr>,
    /// A *computed dim*: a `bind` step gives its value from tensor values, with no
    /// bound (`data` is `None`). The program's [`Program::prologue`] computes it before
    /// the run (the `shape_values` entry point), so that the caller sizes buffers by
    /// it; the run then takes it from the `dims` array like an input dim and its `bind`
    /// step checks that value.
    pub computed: bool,
}

/// Where a buffer's bytes live.
#[derive(Debug, Clone, PartialEq)]
pub enum BufKind {
    /// The caller's input `i`.
    Input(u32),
    /// The caller's output `i`.
    Output(u32),
    /// Constant bytes (weights), inline in the program.
    Const(Arc<[u8]>),
    /// A slice of the workspace arena at a byte offset.
    Arena(Expr),
}

/// A buffer of the program.
#[derive(Debug, Clone, PartialEq)]
pub struct Buffer {
    /// Its name (the graph value it holds).
    pub name: String,
    /// Where it lives.
    pub kind: BufKind,
    /// Its size in bytes.
    pub bytes: Expr,
    /// For inputs and outputs, the tensor type the caller sees, as the frontend writes
    /// it (`f32[1,3]`): what a compiled artifact's manifest describes. kir does not
    /// interpret it.
    pub ty: Option<String>,
}

/// A step of the program's schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Runs kernel `kernel` (an index into [`Program::kernels`]) on buffers.
    Call {
        /// The kernel.
        kernel: u32,
        /// One buffer per kernel parameter.
        args: Vec<u32>,
        /// What the call computes, for people and tools (messages, profiles, the CUDA
        /// launch table): the graph node's name when lowered from a graph. No meaning.
        label: Option<String>,
    },
    /// Copies buffer `src` into buffer `dst` (the size of `dst`).
    Copy {
        /// Destination.
        dst: u32,
        /// Source.
        src: u32,
    },
    /// Runs `then` when byte 0 of buffer `cond` is nonzero, else `els` (ONNX `If`).
    If {
        /// A one-byte boolean buffer.
        cond: u32,
        /// Taken when true.
        then: Vec<Step>,
        /// Taken when false.
        els: Vec<Step>,
    },
    /// Runs kernel `kernel` on `args` and a result array of `syms.len() + 1` i64s that
    /// the step provides (the kernel's last parameter): a nonzero last element fails the
    /// run (it is a reason code of the rule the kernel checks); otherwise symbol
    /// `syms[j]` takes element `j` from here on (`_` takes nothing: the kernel's rule
    /// already checked that element against a constant).
    Bind {
        /// The kernel.
        kernel: u32,
        /// One buffer per kernel parameter but the last.
        args: Vec<u32>,
        /// The data symbols it binds.
        syms: Vec<String>,
        /// What it computes, for people (the graph node's name). No meaning.
        label: Option<String>,
    },
    /// Runs `body` up to `count` times (ONNX `Loop`): before each iteration, the
    /// iteration's number (from 0) is stored as an i64 into buffer `index`, and the loop
    /// ends when byte 0 of buffer `cond` is zero; after each iteration, buffer `src` of
    /// each pair of `scans` is copied into buffer `dst` at byte offset `iteration *
    /// size(src)` (a scan output), then the buffers `(to, from)` of `carried` are copied.
    Loop {
        /// The trip count.
        count: Expr,
        /// An 8-byte buffer that receives the iteration number.
        index: Option<u32>,
        /// A one-byte boolean buffer checked before each iteration.
        cond: Option<u32>,
        /// Carried pairs: `to` receives `from` after every iteration.
        carried: Vec<(u32, u32)>,
        /// Scan pairs `(dst, src)`: `src` goes into slot `iteration` of `dst`.
        scans: Vec<(u32, u32)>,
        /// The body.
        body: Vec<Step>,
    },
}

/// A lowered program: buffers, symbols, kernels and the schedule that runs them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Program {
    /// Its name (the model's).
    pub name: String,
    /// Run-time dims.
    pub symbols: Vec<Symbol>,
    /// Equalities of expressions of the (non-data) symbols that a run requires (checked
    /// with the symbols' minimums before anything runs).
    pub constraints: Vec<(Expr, Expr)>,
    /// Buffers (`%b0`, `%b1`...).
    pub buffers: Vec<Buffer>,
    /// The arena's size in bytes.
    pub arena_bytes: Expr,
    /// Kernels, called by the schedule.
    pub kernels: Vec<Kernel>,
    /// What runs, in order.
    pub schedule: Vec<Step>,
    /// With computed symbols: the top-level schedule steps (indices, ascending) that
    /// compute them, what the `shape_values` entry point runs before a run: their `bind`
    /// steps and every step those read from. Empty otherwise.
    pub prologue: Vec<u32>,
}

impl Program {
    /// Visits every step of the schedule, nested ones included, in the order the code
    /// runs them when every branch is taken (an `if`'s then-steps, then its else-steps;
    /// a `loop`'s body once).
    pub fn visit_steps(&self, f: &mut dyn FnMut(&Step)) {
        fn go(steps: &[Step], f: &mut dyn FnMut(&Step)) {
            for s in steps {
                f(s);
                match s {
                    Step::If { then, els, .. } => {
                        go(then, f);
                        go(els, f);
                    }
                    Step::Loop { body, .. } => go(body, f),
                    _ => {}
                }
            }
        }
        go(&self.schedule, f)
    }

    /// Whether some step (nested ones included) is a `bind`.
    pub fn schedule_has_bind(&self) -> bool {
        let mut found = false;
        self.visit_steps(&mut |s| found |= matches!(s, Step::Bind { .. }));
        found
    }
}

/// What a memory index of a kernel refers to (see [`Kernel::memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// Parameter `%pN`.
    Param(u32),
    /// Constant array `%dN`.
    Data(u32),
    /// Scratch array `%sN`.
    Scratch(u32),
    /// Shared array `%hN`.
    Shared(u32),
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Memory::Param(p) => write!(f, "%p{p}"),
            Memory::Data(j) => write!(f, "%d{j}"),
            Memory::Scratch(j) => write!(f, "%s{j}"),
            Memory::Shared(j) => write!(f, "%h{j}"),
        }
    }
}

impl Kernel {
    /// What memory index `m` refers to: parameters, then constant arrays, then scratch
    /// arrays, then shared arrays; `None` past the last.
    pub fn memory(&self, m: u32) -> Option<Memory> {
        let (np, nd, ns) = (self.params.len() as u32, self.data.len() as u32, self.scratch.len() as u32);
        let nh = self.shared.len() as u32;
        match m {
            m if m < np => Some(Memory::Param(m)),
            m if m < np + nd => Some(Memory::Data(m - np)),
            m if m < np + nd + ns => Some(Memory::Scratch(m - np - nd)),
            m if m < np + nd + ns + nh => Some(Memory::Shared(m - np - nd - ns)),
            _ => None,
        }
    }

    /// Whether `self` and `other` are one code: equal but for their names and, unless
    /// `data_bytes`, the contents of their constant arrays (their names, element types
    /// and lengths still equal).
    pub fn same_code(&self, other: &Kernel, data_bytes: bool) -> bool {
        // Every field but the name (a field added to Kernel must be placed here).
        let Kernel { name: _, params, tables, scratch, data, block, shared, body } = self;
        let arrays = data.len() == other.data.len()
            && data.iter().zip(&other.data).all(|(a, b)| {
                (&a.name, a.elem, a.bytes.len()) == (&b.name, b.elem, b.bytes.len())
                    && (!data_bytes || a.bytes == b.bytes)
            });
        arrays
            && (params, tables, scratch, block, shared, body)
                == (&other.params, &other.tables, &other.scratch, &other.block, &other.shared, &other.body)
    }

    /// A cheap fingerprint that kernels of one code ([`Kernel::same_code`]) share: the
    /// parameter count, the top-level and total statement counts, and the constant
    /// arrays' total size.
    pub fn code_fingerprint(&self) -> (usize, usize, usize, usize) {
        let mut stmts = 0usize;
        self.walk(&mut |_| stmts += 1);
        (self.params.len(), self.body.len(), stmts, self.data.iter().map(|d| d.bytes.len()).sum())
    }

    /// Visits every statement, nested ones included, in order.
    pub fn walk(&self, f: &mut dyn FnMut(&Stmt)) {
        fn go(body: &[Stmt], f: &mut dyn FnMut(&Stmt)) {
            for s in body {
                f(s);
                match s {
                    Stmt::For { body, .. } => go(body, f),
                    Stmt::If { then, els, .. } => {
                        go(then, f);
                        go(els, f);
                    }
                    _ => {}
                }
            }
        }
        go(&self.body, f)
    }
}
