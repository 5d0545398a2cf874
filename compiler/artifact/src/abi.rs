//! The C ABI of generated code, defined once. The code generator builds the exported
//! entry points' signatures from [`ENTRY_POINTS`] (and the thread-pool callback's from
//! [`PFOR`] and [`TASK`]), the compiler writes `model.h` from the same table
//! ([`header_declarations`]), and the runtime calls the code through the Rust types
//! below, which a test checks against the table.
//!
//! Symbols are the artifact's [`crate::Manifest::symbol_prefix`] followed by the entry
//! point's name (`dlc_mlp_run`).

/// A C type in the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CType {
    /// `void` (results only).
    Void,
    /// `uint32_t`.
    U32,
    /// `uint64_t`.
    U64,
    /// `int32_t`.
    I32,
    /// `int64_t`.
    I64,
    /// `void *`.
    Ptr,
    /// `const void *const *`: an array of read-only buffers.
    InArray,
    /// `void *const *`: an array of writable buffers.
    OutArray,
    /// `const int64_t *`: the values of the model's run-time dims, in manifest order.
    Dims,
    /// `int64_t *`: the same array, in which a run also writes the dims it computes
    /// from tensor values (the manifest's data symbols).
    DimsInOut,
    /// The thread-pool callback [`PFOR`], as a function pointer.
    Pfor,
    /// A task [`TASK`], as a function pointer.
    Task,
    /// `const char *`: a NUL-terminated string.
    CStr,
}

impl CType {
    /// The C spelling, for artifacts whose symbols start with `prefix`.
    pub fn c(self, prefix: &str) -> String {
        match self {
            CType::Void => "void".into(),
            CType::U32 => "uint32_t".into(),
            CType::U64 => "uint64_t".into(),
            CType::I32 => "int32_t".into(),
            CType::I64 => "int64_t".into(),
            CType::Ptr => "void *".into(),
            CType::InArray => "const void *const *".into(),
            CType::OutArray => "void *const *".into(),
            CType::Dims => "const int64_t *".into(),
            CType::DimsInOut => "int64_t *".into(),
            CType::Pfor => format!("{prefix}pfor_fn"),
            CType::Task => format!("{prefix}task_fn"),
            CType::CStr => "const char *".into(),
        }
    }

    /// Whether values of this type are pointers (to data or to functions).
    pub fn is_pointer(self) -> bool {
        matches!(
            self,
            CType::Ptr
                | CType::InArray
                | CType::OutArray
                | CType::Dims
                | CType::DimsInOut
                | CType::Pfor
                | CType::Task
                | CType::CStr
        )
    }

    /// The width in bits of an integer type (`None` for pointers and void).
    pub fn int_bits(self) -> Option<u32> {
        match self {
            CType::U32 | CType::I32 => Some(32),
            CType::U64 | CType::I64 => Some(64),
            _ => None,
        }
    }
}

/// A parameter of a function in the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Its name in the header.
    pub name: &'static str,
    /// Its type.
    pub ty: CType,
}

/// A function of the ABI: an exported entry point or a callback type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    /// The name after the symbol prefix.
    pub name: &'static str,
    /// The result type.
    pub ret: CType,
    /// The parameters.
    pub params: &'static [Param],
    /// What it does (the header's comment).
    pub doc: &'static str,
}

const fn p(name: &'static str, ty: CType) -> Param {
    Param { name, ty }
}

/// `uint32_t <p>abi_version(void)`.
pub const ABI_VERSION_FN: Function =
    Function { name: "abi_version", ret: CType::U32, params: &[], doc: "ABI version of the code; equals ABI_VERSION." };

/// `uint64_t <p>workspace_size(void)`.
pub const WORKSPACE_SIZE: Function = Function {
    name: "workspace_size",
    ret: CType::U64,
    params: &[],
    doc: "Bytes of workspace run() needs (0 for a model with run-time dims: see\n \
          * workspace_size_dims).",
};

/// `uint64_t <p>workspace_size_dims(dims)`.
pub const WORKSPACE_SIZE_DIMS: Function = Function {
    name: "workspace_size_dims",
    ret: CType::U64,
    params: &[p("dims", CType::Dims)],
    doc: "Bytes of workspace run_dims() needs at these run-time dims (dims[i] is the value\n \
          * of the model's symbol i, in the order DLC_<P>SYMBOLS lists; ignored, and may be\n \
          * NULL, when the model has none). UINT64_MAX when a dim is below its minimum or\n \
          * the size does not fit in 64 bits.",
};

/// `int32_t <p>run(inputs, outputs, workspace)`.
pub const RUN: Function = Function {
    name: "run",
    ret: CType::I32,
    params: &[p("inputs", CType::InArray), p("outputs", CType::OutArray), p("workspace", CType::Ptr)],
    doc: "Runs the model. inputs[i] and outputs[i] point to buffers in the order above\n \
          * (row-major, aligned to their element size); workspace points to\n \
          * workspace_size() bytes aligned to 64. Returns 0 on success, 2 when the model\n \
          * has run-time dims (call run_dims), 16 + 16 * site + reason when an index\n \
          * computed at run time is out of range (bind site `site` of the manifest's binds,\n \
          * reason 13 of its bind_reasons). Calls on distinct workspaces and outputs may\n \
          * run concurrently.",
};

/// `int32_t <p>run_threaded(inputs, outputs, workspace, pfor, state)`.
pub const RUN_THREADED: Function = Function {
    name: "run_threaded",
    ret: CType::I32,
    params: &[
        p("inputs", CType::InArray),
        p("outputs", CType::OutArray),
        p("workspace", CType::Ptr),
        p("pfor", CType::Pfor),
        p("state", CType::Ptr),
    ],
    doc: "run() with a thread pool: large kernels call pfor(state, task, ctx, n), which must\n \
          * call task(ctx, i) once for every i in [0, n), on any threads, and return when all\n \
          * are done. pfor NULL runs everything on the calling thread.",
};

/// `int32_t <p>run_dims(inputs, outputs, workspace, dims, pfor, state)`.
pub const RUN_DIMS: Function = Function {
    name: "run_dims",
    ret: CType::I32,
    params: &[
        p("inputs", CType::InArray),
        p("outputs", CType::OutArray),
        p("workspace", CType::Ptr),
        p("dims", CType::DimsInOut),
        p("pfor", CType::Pfor),
        p("state", CType::Ptr),
    ],
    doc: "run_threaded() at run-time dims: dims as for workspace_size_dims(), buffers sized\n \
          * for them (the manifest and DLC_<P>SYMBOLS say how each shape depends on them),\n \
          * workspace of workspace_size_dims(dims) bytes. Returns 3 when a dim is below its\n \
          * minimum. The caller checks the inputs' shapes against the dims. A model whose\n \
          * shapes depend on tensor values (the manifest's data symbols, after the input\n \
          * dims in dims[]) writes their values into dims[]; its outputs are sized for the\n \
          * manifest's max_bytes. It returns 16 + 16 * site + reason when the values break\n \
          * the rule of bind site `site` (the manifest's binds and bind_reasons), or an\n \
          * index at that site is out of range.",
};

/// `int32_t <p>shape_values(inputs, workspace, dims, pfor, state)`.
pub const SHAPE_VALUES: Function = Function {
    name: "shape_values",
    ret: CType::I32,
    params: &[
        p("inputs", CType::InArray),
        p("workspace", CType::Ptr),
        p("dims", CType::DimsInOut),
        p("pfor", CType::Pfor),
        p("state", CType::Ptr),
    ],
    doc: "For a model with computed dims (the manifest's symbols marked computed: extents\n \
          * computed from tensor values, such as a Resize's sizes given as an input, with no\n \
          * bound the input shapes give): computes them before run_dims. dims holds the\n \
          * input dims (other slots are ignored); workspace is workspace_size_dims(dims)\n \
          * bytes with every computed dim set to 0. It writes each computed dim into dims[];\n \
          * size the outputs and workspace for those dims, then call run_dims with them\n \
          * (which fails with 3 if they are not the ones the inputs give). Returns 0, 3, or\n \
          * a bind status as run_dims does. Models without computed dims return 0.",
};

/// `const char *<p>signature(void)`.
pub const SIGNATURE: Function = Function {
    name: "signature",
    ret: CType::CStr,
    params: &[],
    doc: "The code's signature: ABI version, model name, symbol prefix, inputs, outputs,\n \
          * run-time dims and the weights' hash, one per line (Manifest::signature's text).\n \
          * dlc-runtime compares it with the manifest before the first call, so a manifest\n \
          * edited or a library from another model is an error, not a wrong buffer size.",
};

/// The exported entry points, in header order.
pub const ENTRY_POINTS: [Function; 8] =
    [ABI_VERSION_FN, WORKSPACE_SIZE, RUN, RUN_THREADED, WORKSPACE_SIZE_DIMS, SHAPE_VALUES, RUN_DIMS, SIGNATURE];

/// What `run` and `run_threaded` return for a model with run-time dims.
pub const STATUS_NEEDS_DIMS: i32 = 2;
/// What `run_dims` returns when a dim is below its minimum.
pub const STATUS_BAD_DIMS: i32 = 3;
/// `run_dims` returns `STATUS_BIND + 16 * site + reason` when the values a shape is
/// computed from break bind site `site`'s rule (`reason`: 1 to 15, the manifest's
/// `bind_reasons[reason - 1]`).
pub const STATUS_BIND: i32 = 16;

/// The status for bind site `site` failing with `reason` (1 to 15).
pub fn bind_status(site: usize, reason: i64) -> i32 {
    STATUS_BIND + 16 * site as i32 + reason.clamp(1, 15) as i32
}

/// The bind site and reason of a status [`bind_status`] made.
pub fn decode_bind_status(status: i32) -> Option<(usize, usize)> {
    (status >= STATUS_BIND).then(|| (((status - STATUS_BIND) / 16) as usize, ((status - STATUS_BIND) % 16) as usize))
}

/// The thread-pool callback `void pfor(void *state, task_fn task, void *ctx, int64_t n)`.
pub const PFOR: Function = Function {
    name: "pfor_fn",
    ret: CType::Void,
    params: &[p("state", CType::Ptr), p("task", CType::Task), p("ctx", CType::Ptr), p("n", CType::I64)],
    doc: "Runs task(ctx, i) for every i in [0, n), on any threads, and returns when all are done.",
};

/// A parallel task `void task(void *ctx, int64_t i)`.
pub const TASK: Function =
    Function { name: "task_fn", ret: CType::Void, params: &[p("ctx", CType::Ptr), p("i", CType::I64)], doc: "" };

/// The symbol of `f` in an artifact whose prefix is `prefix`.
pub fn symbol(prefix: &str, f: &Function) -> String {
    format!("{prefix}{}", f.name)
}

fn params_c(prefix: &str, f: &Function) -> String {
    if f.params.is_empty() {
        return "void".into();
    }
    f.params
        .iter()
        .map(|q| {
            let t = q.ty.c(prefix);
            if t.ends_with('*') {
                format!("{t}{}", q.name)
            } else {
                format!("{t} {}", q.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The typedefs and declarations of every entry point, as `model.h` has them.
pub fn header_declarations(prefix: &str) -> String {
    let mut h = String::new();
    let typedef =
        |f: &Function| format!("typedef {} (*{}{})({});\n", f.ret.c(prefix), prefix, f.name, params_c(prefix, f));
    h.push_str(&typedef(&TASK));
    h.push_str(&format!("/* {} */\n", PFOR.doc));
    h.push_str(&typedef(&PFOR));
    for f in &ENTRY_POINTS {
        let ret = f.ret.c(prefix);
        let sep = if ret.ends_with('*') { "" } else { " " };
        h.push_str(&format!("\n/* {} */\n{ret}{sep}{}({});\n", f.doc, symbol(prefix, f), params_c(prefix, f)));
    }
    h
}

/// The Rust type of [`ABI_VERSION_FN`].
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;
/// The Rust type of [`WORKSPACE_SIZE`].
pub type WorkspaceSizeFn = unsafe extern "C" fn() -> u64;
/// The Rust type of [`SIGNATURE`].
pub type SignatureFn = unsafe extern "C" fn() -> *const std::ffi::c_char;
/// The Rust type of [`RUN`].
pub type RunFn = unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8) -> i32;
/// The Rust type of [`TASK`].
pub type TaskFn = unsafe extern "C" fn(*mut u8, i64);
/// The Rust type of [`PFOR`] (the state is the caller's thread pool).
pub type PforFn = unsafe extern "C" fn(*const u8, TaskFn, *mut u8, i64);
/// The Rust type of [`RUN_THREADED`].
pub type RunThreadedFn =
    unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8, Option<PforFn>, *const u8) -> i32;
/// The Rust type of [`WORKSPACE_SIZE_DIMS`].
pub type WorkspaceSizeDimsFn = unsafe extern "C" fn(*const i64) -> u64;
/// The Rust type of [`SHAPE_VALUES`].
pub type ShapeValuesFn = unsafe extern "C" fn(*const *const u8, *mut u8, *mut i64, Option<PforFn>, *const u8) -> i32;
/// The Rust type of [`RUN_DIMS`].
pub type RunDimsFn =
    unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8, *mut i64, Option<PforFn>, *const u8) -> i32;

#[cfg(test)]
mod tests {
    use super::*;

    /// The return and parameter sizes of an `extern "C"` function pointer type.
    trait Sig {
        fn sizes() -> (usize, Vec<usize>);
    }
    macro_rules! sig {
        ($($a:ident),*) => {
            impl<R, $($a),*> Sig for unsafe extern "C" fn($($a),*) -> R {
                fn sizes() -> (usize, Vec<usize>) {
                    (std::mem::size_of::<R>(), vec![$(std::mem::size_of::<$a>()),*])
                }
            }
        };
    }
    sig!();
    sig!(A, B);
    sig!(A, B, C);
    sig!(A, B, C, D);
    sig!(A);
    sig!(A, B, C, D, E);
    sig!(A, B, C, D, E, F);

    fn table_sizes(f: &Function) -> (usize, Vec<usize>) {
        let size = |t: CType| match t {
            CType::Void => 0,
            t if t.is_pointer() => std::mem::size_of::<usize>(),
            t => t.int_bits().unwrap_or(0) as usize / 8,
        };
        (size(f.ret), f.params.iter().map(|q| size(q.ty)).collect())
    }

    /// The Rust bindings have the table's shape: arity, and the width of the result and
    /// of every parameter (a nullable function pointer is one pointer).
    #[test]
    fn rust_types_match_the_table() {
        assert_eq!(<AbiVersionFn as Sig>::sizes(), table_sizes(&ABI_VERSION_FN));
        assert_eq!(<WorkspaceSizeFn as Sig>::sizes(), table_sizes(&WORKSPACE_SIZE));
        assert_eq!(<RunFn as Sig>::sizes(), table_sizes(&RUN));
        assert_eq!(<RunThreadedFn as Sig>::sizes(), table_sizes(&RUN_THREADED));
        assert_eq!(<PforFn as Sig>::sizes(), table_sizes(&PFOR));
        assert_eq!(<TaskFn as Sig>::sizes(), table_sizes(&TASK));
        assert_eq!(<WorkspaceSizeDimsFn as Sig>::sizes(), table_sizes(&WORKSPACE_SIZE_DIMS));
        assert_eq!(<RunDimsFn as Sig>::sizes(), table_sizes(&RUN_DIMS));
        assert_eq!(<ShapeValuesFn as Sig>::sizes(), table_sizes(&SHAPE_VALUES));
        assert_eq!(<SignatureFn as Sig>::sizes(), table_sizes(&SIGNATURE));
    }

    #[test]
    fn header_declares_every_entry_point() {
        let h = header_declarations("dlc_m_");
        assert!(h.contains("typedef void (*dlc_m_task_fn)(void *ctx, int64_t i);"));
        assert!(h.contains("typedef void (*dlc_m_pfor_fn)(void *state, dlc_m_task_fn task, void *ctx, int64_t n);"));
        assert!(h.contains("int32_t dlc_m_run(const void *const *inputs, void *const *outputs, void *workspace);"));
        assert!(h.contains("uint32_t dlc_m_abi_version(void);"));
        assert!(h.contains("const char *dlc_m_signature(void);"));
        assert!(h.contains("uint64_t dlc_m_workspace_size_dims(const int64_t *dims);"));
        assert!(h.contains(
            "int32_t dlc_m_run_threaded(const void *const *inputs, void *const *outputs, void *workspace, \
             dlc_m_pfor_fn pfor, void *state);"
        ));
    }
}
