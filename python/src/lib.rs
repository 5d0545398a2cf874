//! `dlc._dlc`: the native half of the `dlc` Python package (python/dlc).
//!
//! [`compile`] calls `dlc_driver::compile`, the function behind `dlc compile`, and
//! [`Artifact`] wraps a `dlc_runtime::Model`: numpy arrays go to the generated code
//! without a copy when they are C-contiguous, native-endian and aligned to their
//! element size, outputs are numpy arrays the generated code writes into directly, and
//! the GIL is released while the model runs. Errors are the `dlc.Error` hierarchy with
//! the CLI's messages; a panic never crosses into Python (pyo3 turns one into
//! `PanicException`, and none is expected: every failure path returns an error).
use numpy::npyffi::{self, PY_ARRAY_API};
use numpy::{PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

create_exception!(dlc, Error, PyException, "Base class of every error dlc raises.");
create_exception!(dlc, CompileError, Error, "The model could not be compiled (the message is `dlc compile`'s).");
create_exception!(
    dlc,
    UnsupportedOpError,
    CompileError,
    "The model uses ops dlc does not support; `nodes` lists every one as (name, op_type, domain, opset)."
);
create_exception!(
    dlc,
    InputError,
    Error,
    "Inputs that do not fit the model: a missing or unknown name, a wrong dtype or shape, \
     run-time dims that break a constraint, or values that give an invalid shape."
);
create_exception!(dlc, LoadError, Error, "An artifact that cannot be loaded on this machine.");

/// Runs `f`, turning a panic (a bug in dlc) into `dlc.Error` instead of letting
/// pyo3's `PanicException` (a `BaseException`) reach the caller.
fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(Error::new_err(format!("internal error in dlc (a bug; please report it with the input): {what}")))
    })
}

/// The compile error as the CLI prints it, as the matching exception.
fn compile_error(py: Python<'_>, e: anyhow::Error) -> PyErr {
    let msg = format!("{e:#}");
    let nodes = e.chain().find_map(|c| match c.downcast_ref::<dlc_onnx::OnnxError>() {
        Some(dlc_onnx::OnnxError::Unsupported { nodes, .. }) => Some(nodes.clone()),
        _ => None,
    });
    match nodes {
        Some(nodes) => {
            let err = UnsupportedOpError::new_err(msg);
            let list: Vec<(String, String, String, i64)> =
                nodes.into_iter().map(|n| (n.name, n.op_type, n.domain, n.opset)).collect();
            if let Err(e) = err.value(py).setattr("nodes", list) {
                return e;
            }
            err
        }
        None => CompileError::new_err(msg),
    }
}

/// A runtime error as the matching exception.
fn run_error(e: dlc_runtime::RuntimeError) -> PyErr {
    use dlc_runtime::RuntimeError as R;
    let msg = e.to_string();
    match e {
        R::InputCount { .. }
        | R::UnknownInput { .. }
        | R::AbsentInput { .. }
        | R::InputDtype { .. }
        | R::InputShape { .. }
        | R::InputBytes { .. }
        | R::Dims(_)
        | R::BadShapeValue(_) => InputError::new_err(msg),
        _ => Error::new_err(msg),
    }
}

/// numpy's name for a dlc dtype. The storage-only types travel as their codes: bf16 as
/// uint16, the 8- and 4-bit floats as uint8, the 4- and 2-bit integers as int8/uint8.
fn numpy_name(dtype: &str) -> Option<&'static str> {
    Some(match dtype {
        "f32" => "float32",
        "f64" => "float64",
        "f16" => "float16",
        "i8" | "i4" | "i2" => "int8",
        "i16" => "int16",
        "i32" => "int32",
        "i64" => "int64",
        "u8" | "u4" | "u2" | "f8e4m3fn" | "f8e4m3fnuz" | "f8e5m2" | "f8e5m2fnuz" | "f8e8m0" | "f4e2m1" => "uint8",
        "u16" | "bf16" => "uint16",
        "u32" => "uint32",
        "u64" => "uint64",
        "bool" => "bool",
        _ => return None,
    })
}

/// dlc's name for a numpy dtype (by kind and size), or `None` for one dlc has no use for.
fn dlc_dtype(d: &Bound<'_, PyArrayDescr>) -> Option<&'static str> {
    Some(match (d.kind(), d.itemsize()) {
        (b'f', 4) => "f32",
        (b'f', 8) => "f64",
        (b'f', 2) => "f16",
        (b'i', 1) => "i8",
        (b'i', 2) => "i16",
        (b'i', 4) => "i32",
        (b'i', 8) => "i64",
        (b'u', 1) => "u8",
        (b'u', 2) => "u16",
        (b'u', 4) => "u32",
        (b'u', 8) => "u64",
        (b'b', 1) => "bool",
        _ => return None,
    })
}

/// The dtype `got` stands for when the model takes `want` (as `dlc run`'s npy::adapt):
/// the codes of a storage-only type in the unsigned (or for i4/i2 signed) integer of its
/// size, range-checked for the packed integers.
fn adapt(got: &'static str, want: &str, name: &str, data: &[u8]) -> PyResult<&'static str> {
    let storage = match want {
        "bf16" if got == "u16" => "bf16",
        "f8e4m3fn" if got == "u8" => "f8e4m3fn",
        "f8e4m3fnuz" if got == "u8" => "f8e4m3fnuz",
        "f8e5m2" if got == "u8" => "f8e5m2",
        "f8e5m2fnuz" if got == "u8" => "f8e5m2fnuz",
        "f8e8m0" if got == "u8" => "f8e8m0",
        "f4e2m1" if got == "u8" => "f4e2m1",
        "i4" | "i2" if got == "i8" => {
            let lim = if want == "i4" { 8i8 } else { 2 };
            if !data.iter().all(|&b| (-lim..lim).contains(&(b as i8))) {
                return Err(InputError::new_err(format!(
                    "input '{name}': {want} values must lie in [{}, {}]",
                    -lim,
                    lim - 1
                )));
            }
            if want == "i4" {
                "i4"
            } else {
                "i2"
            }
        }
        "u4" | "u2" | "f4e2m1" if got == "u8" => {
            let lim = if want == "u2" { 4 } else { 16 };
            if !data.iter().all(|&b| b < lim) {
                return Err(InputError::new_err(format!("input '{name}': {want} values must lie in [0, {}]", lim - 1)));
            }
            match want {
                "u4" => "u4",
                "u2" => "u2",
                _ => "f4e2m1",
            }
        }
        _ => got,
    };
    Ok(storage)
}

/// An input array the generated code can read in place, and how to read it.
struct Feed<'py> {
    name: String,
    dtype: &'static str,
    shape: Vec<u64>,
    ptr: usize,
    len: usize,
    /// Keeps the array (or the contiguous copy made of it) alive.
    _array: Bound<'py, PyUntypedArray>,
}

/// `value` as a C-contiguous, native-endian numpy array (itself when it is one).
fn as_array<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyUntypedArray>> {
    if let Ok(a) = value.cast::<PyUntypedArray>() {
        let native = a.dtype().is_native_byteorder() != Some(false);
        if a.is_c_contiguous() && native {
            return Ok(a.clone());
        }
        let np = py.import("numpy")?;
        let d = a.dtype().call_method1("newbyteorder", ("=",))?;
        let c = np.call_method1("ascontiguousarray", (a, d))?;
        return Ok(c.cast_into::<PyUntypedArray>()?);
    }
    // Not an array: numpy's own conversion (`asarray` keeps a scalar 0-d), then the
    // array path for its layout.
    let np = py.import("numpy")?;
    let c = np.call_method1("asarray", (value,))?;
    match c.cast::<PyUntypedArray>() {
        Ok(a) if a.is_c_contiguous() => Ok(a.clone()),
        _ => Ok(np.call_method1("ascontiguousarray", (c,))?.cast_into::<PyUntypedArray>()?),
    }
}

/// A new, uninitialised C-contiguous array of `descr` and `shape`.
fn empty_array<'py>(
    py: Python<'py>,
    descr: &Bound<'py, PyArrayDescr>,
    shape: &[u64],
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let mut dims: Vec<npyffi::npy_intp> = shape
        .iter()
        .map(|&d| npyffi::npy_intp::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::new_err(format!("output shape {shape:?} is too large")))?;
    // SAFETY: numpy's documented constructor: the descriptor reference is stolen (hence
    // `into_dtype_ptr`, which takes a new one), `dims` holds `ndim` extents, null
    // strides and data ask numpy to allocate a C-contiguous array.
    unsafe {
        let ptr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type),
            descr.clone().into_dtype_ptr(),
            dims.len() as std::os::raw::c_int,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

/// The data pointer of a numpy array.
fn data_ptr(a: &Bound<'_, PyUntypedArray>) -> *mut u8 {
    // SAFETY: `as_array_ptr` points at a live PyArrayObject while `a` is, and `a`'s
    // existence means the thread is attached to the interpreter.
    unsafe { (*npyffi::objects::_PyArray_GET_ITEM_DATA(a.as_array_ptr())).data as *mut u8 }
}

/// Where one output of a call is written.
enum OutBuf<'py> {
    /// A numpy array of the final shape, written in place.
    Array(Bound<'py, PyUntypedArray>),
    /// An output whose shape the run computes: a buffer of its bound (8-byte words, so
    /// aligned for every element type), copied into an array afterwards.
    Bounded(Vec<u64>),
}

/// A compiled artifact loaded by dlc-runtime (`dlc.Model` wraps it).
#[pyclass(module = "dlc._dlc", frozen)]
struct Artifact {
    model: dlc_runtime::Model,
    /// Free pools and workspaces; a call takes one (or makes one), so concurrent calls
    /// from several threads each have their own.
    scratch: Mutex<Vec<dlc_runtime::Scratch>>,
    threads: AtomicUsize,
    /// The numpy dtype of each output.
    out_descr: Vec<Py<PyArrayDescr>>,
}

impl Artifact {
    fn take_scratch(&self) -> dlc_runtime::Scratch {
        let want = self.threads.load(Ordering::Relaxed);
        let mut free = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = free.pop() {
            if s.threads() == want {
                return s;
            }
        }
        dlc_runtime::Scratch::new(want)
    }

    fn give_back(&self, s: dlc_runtime::Scratch) {
        if s.threads() == self.threads.load(Ordering::Relaxed) {
            self.scratch.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        }
    }

    /// Checks and converts the feeds (a dict of name -> array-like).
    fn feeds<'py>(&self, py: Python<'py>, feeds: &Bound<'py, PyDict>) -> PyResult<Vec<Feed<'py>>> {
        let mut out = Vec::with_capacity(feeds.len());
        for (k, v) in feeds.iter() {
            let name: String = k.extract().map_err(|_| InputError::new_err("feed names must be strings"))?;
            let array = as_array(py, &v)
                .map_err(|e| InputError::new_err(format!("input '{name}': not convertible to an array: {e}")))?;
            let descr = array.dtype();
            let dtype = dlc_dtype(&descr).ok_or_else(|| {
                InputError::new_err(format!("input '{name}': numpy dtype {descr} is not one dlc takes"))
            })?;
            let shape: Vec<u64> = array.shape().iter().map(|&d| d as u64).collect();
            let len = array.len() * descr.itemsize();
            let ptr = data_ptr(&array) as usize;
            let dtype = match self.model.manifest().inputs.iter().find(|s| s.name == name) {
                Some(spec) if spec.dtype != dtype => {
                    // SAFETY: the array is C-contiguous with `len` bytes, alive in `array`.
                    let data = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
                    adapt(dtype, &spec.dtype, &name, data)?
                }
                _ => dtype,
            };
            out.push(Feed { name, dtype, shape, ptr, len, _array: array });
        }
        Ok(out)
    }
}

/// The run-time view of feeds: what crosses into the GIL-free part of a call.
type RawFeed = (String, &'static str, Vec<u64>, usize, usize);

fn raw(feeds: &[Feed<'_>]) -> Vec<RawFeed> {
    feeds.iter().map(|f| (f.name.clone(), f.dtype, f.shape.clone(), f.ptr, f.len)).collect()
}

/// # Safety
/// Each feed's pointer addresses `len` readable bytes for the lifetime of the result.
unsafe fn views(raw: &[RawFeed]) -> Vec<(&str, dlc_runtime::TensorRef<'_>)> {
    raw.iter()
        .map(|(n, d, s, p, l)| {
            // SAFETY: as the caller promises.
            let data = unsafe { std::slice::from_raw_parts(*p as *const u8, *l) };
            (n.as_str(), dlc_runtime::TensorRef { dtype: d, shape: s, data })
        })
        .collect()
}

fn spec_list<'py>(py: Python<'py>, specs: &[dlc_artifact::TensorSpec]) -> PyResult<Bound<'py, PyList>> {
    let items: Vec<(String, String, Vec<Py<PyAny>>)> = specs
        .iter()
        .map(|s| {
            let shape = s
                .shape
                .iter()
                .map(|d| match (&d.fixed, &d.symbol) {
                    (Some(n), _) => n.into_pyobject(py).map(|v| v.into_any().unbind()).map_err(PyErr::from),
                    (None, Some(t)) => Ok(t.into_pyobject(py)?.into_any().unbind()),
                    (None, None) => Ok("?".into_pyobject(py)?.into_any().unbind()),
                })
                .collect::<PyResult<_>>()?;
            Ok((s.name.clone(), s.dtype.clone(), shape))
        })
        .collect::<PyResult<_>>()?;
    PyList::new(py, items)
}

#[pymethods]
impl Artifact {
    /// Loads the artifact in `path` (a directory `dlc compile` wrote).
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Artifact> {
        let model = py
            .detach(|| dlc_runtime::Model::load(&path))
            .map_err(|e| LoadError::new_err(format!("cannot load artifact '{}': {e}", path.display())))?;
        let out_descr = model
            .manifest()
            .outputs
            .iter()
            .map(|s| {
                let name = numpy_name(&s.dtype).ok_or_else(|| {
                    LoadError::new_err(format!("output '{}': dtype {} has no numpy equivalent", s.name, s.dtype))
                })?;
                Ok(PyArrayDescr::new(py, name)?.unbind())
            })
            .collect::<PyResult<_>>()?;
        Ok(Artifact {
            model,
            scratch: Mutex::new(Vec::new()),
            threads: AtomicUsize::new(dlc_runtime::default_threads()),
            out_descr,
        })
    }

    /// The inputs as (name, dtype, shape) with symbolic dims as strings.
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        spec_list(py, &self.model.manifest().inputs)
    }

    /// The outputs as (name, dtype, shape) with symbolic dims as strings.
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        spec_list(py, &self.model.manifest().outputs)
    }

    /// The run-time dims as (name, smallest value, computed from data).
    fn symbols(&self) -> Vec<(String, u64, bool)> {
        self.model.manifest().symbols.iter().map(|s| (s.name.clone(), s.min, s.data)).collect()
    }

    /// The manifest as JSON.
    fn manifest_json(&self) -> PyResult<String> {
        serde_json::to_string(self.model.manifest()).map_err(|e| Error::new_err(e.to_string()))
    }

    /// The thread count runs use.
    #[getter]
    fn get_threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }

    #[setter]
    fn set_threads(&self, n: usize) -> PyResult<()> {
        if n == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err("threads must be at least 1"));
        }
        self.threads.store(n, Ordering::Relaxed);
        self.scratch.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(())
    }

    /// Runs the model on `feeds` (name -> array); returns a dict name -> array in the
    /// model's output order.
    fn run<'py>(&self, py: Python<'py>, feeds: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
        guard(|| self.run_inner(py, feeds))
    }

    /// Times `iters` runs on `feeds` after `warmup` runs (no allocation inside the
    /// timing); returns the latencies in seconds, one per run.
    fn bench(&self, py: Python<'_>, feeds: &Bound<'_, PyDict>, iters: usize, warmup: usize) -> PyResult<Vec<f64>> {
        guard(|| self.bench_inner(py, feeds, iters, warmup))
    }
}

impl Artifact {
    fn run_inner<'py>(&self, py: Python<'py>, feeds: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
        let feeds = self.feeds(py, feeds)?;
        let raw = raw(&feeds);
        // SAFETY: the arrays stay alive in `feeds` until this function returns.
        let prepared = self.model.prepare(&unsafe { views(&raw) }).map_err(run_error)?;
        let mut outs = Vec::with_capacity(prepared.outputs.len());
        for (slot, descr) in prepared.outputs.iter().zip(&self.out_descr) {
            outs.push(match &slot.shape {
                Some(shape) => OutBuf::Array(empty_array(py, descr.bind(py), shape)?),
                None => OutBuf::Bounded(vec![0u64; slot.bytes.div_ceil(8)]),
            });
        }
        let out_raw: Vec<(usize, usize)> = outs
            .iter_mut()
            .zip(&prepared.outputs)
            .map(|(o, slot)| match o {
                OutBuf::Array(a) => (data_ptr(a) as usize, slot.bytes),
                OutBuf::Bounded(v) => (v.as_mut_ptr() as usize, v.len() * 8),
            })
            .collect();
        let mut scratch = self.take_scratch();
        let model = &self.model;
        let (result, scratch) = py.detach(move || {
            // SAFETY: the input arrays and output buffers outlive the call: `feeds` and
            // `outs` are dropped after it; nothing else touches the outputs meanwhile.
            let views = unsafe { views(&raw) };
            let mut bufs: Vec<&mut [u8]> =
                out_raw.iter().map(|&(p, n)| unsafe { std::slice::from_raw_parts_mut(p as *mut u8, n) }).collect();
            let r = model.run_prepared(&prepared, &views, &mut bufs, &mut scratch);
            (r, scratch)
        });
        self.give_back(scratch);
        let sizes = result.map_err(run_error)?;
        drop(feeds);
        let dict = PyDict::new(py);
        for (((spec, o), (shape, n)), descr) in
            self.model.manifest().outputs.iter().zip(outs).zip(sizes).zip(&self.out_descr)
        {
            let array = match o {
                OutBuf::Array(a) => a,
                OutBuf::Bounded(v) => {
                    let a = empty_array(py, descr.bind(py), &shape)?;
                    // SAFETY: `a` is a fresh C-contiguous array of `shape`, `n` bytes;
                    // `v` holds at least `n` bytes (checked by run_prepared).
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr() as *const u8, data_ptr(&a), n) };
                    a
                }
            };
            dict.set_item(&spec.name, array)?;
        }
        Ok(dict)
    }

    fn bench_inner(
        &self,
        py: Python<'_>,
        feeds: &Bound<'_, PyDict>,
        iters: usize,
        warmup: usize,
    ) -> PyResult<Vec<f64>> {
        let feeds = self.feeds(py, feeds)?;
        let raw = raw(&feeds);
        // SAFETY: the arrays stay alive in `feeds` until this function returns.
        let prepared = self.model.prepare(&unsafe { views(&raw) }).map_err(run_error)?;
        let mut bufs: Vec<Vec<u64>> = prepared.outputs.iter().map(|s| vec![0u64; s.bytes.div_ceil(8)]).collect();
        let mut scratch = self.take_scratch();
        let model = &self.model;
        let (result, scratch) = py.detach(move || {
            // SAFETY: as in `run`.
            let views = unsafe { views(&raw) };
            let mut times = Vec::with_capacity(iters);
            let mut run = |scratch: &mut dlc_runtime::Scratch| {
                let mut outs: Vec<&mut [u8]> = bufs
                    .iter_mut()
                    .map(|v| {
                        let n = v.len() * 8;
                        // SAFETY: reinterpreting owned u64 words as their bytes.
                        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, n) }
                    })
                    .collect();
                let t = std::time::Instant::now();
                model.run_prepared(&prepared, &views, &mut outs, scratch).map(|_| t.elapsed().as_secs_f64())
            };
            let r = (|| {
                for _ in 0..warmup {
                    run(&mut scratch)?;
                }
                for _ in 0..iters {
                    times.push(run(&mut scratch)?);
                }
                Ok(times)
            })();
            (r, scratch)
        });
        self.give_back(scratch);
        result.map_err(run_error)
    }
}

/// Compiles `model` (a .onnx, .dlc or .kir path) into the artifact directory `out_dir`
/// with `dlc compile`'s pipeline; returns report.json's contents as JSON text.
#[pyfunction]
#[pyo3(signature = (model, out_dir, *, name=None, input_shapes=None, dims=None, target=None, cpu=None,
                    quantize=None, calibrate=None, no_opt=false, backend="llvm", sequence_lengths=None, absent=None))]
#[allow(clippy::too_many_arguments)]
fn compile(
    py: Python<'_>,
    model: PathBuf,
    out_dir: PathBuf,
    name: Option<String>,
    input_shapes: Option<HashMap<String, Vec<i64>>>,
    dims: Option<HashMap<String, i64>>,
    target: Option<String>,
    cpu: Option<String>,
    quantize: Option<String>,
    calibrate: Option<PathBuf>,
    no_opt: bool,
    backend: &str,
    sequence_lengths: Option<HashMap<String, usize>>,
    absent: Option<Vec<String>>,
) -> PyResult<String> {
    use dlc_driver::quantize::{QuantizeArgs, Scheme};
    if backend != "llvm" {
        return Err(CompileError::new_err(format!("backend '{backend}' is not implemented yet; use backend=\"llvm\"")));
    }
    let dim = |what: &str, v: i64| -> PyResult<u64> {
        u64::try_from(v).ok().filter(|&v| v > 0 && v <= dlc_driver::compile::MAX_PINNED_DIM).ok_or_else(|| {
            CompileError::new_err(format!(
                "{what}: {v} is not a dim dlc accepts (1 to {})",
                dlc_driver::compile::MAX_PINNED_DIM
            ))
        })
    };
    let mut shapes = HashMap::new();
    for (k, v) in input_shapes.unwrap_or_default() {
        let d = v.iter().map(|&d| dim(&format!("input_shapes['{k}']"), d)).collect::<PyResult<Vec<_>>>()?;
        shapes.insert(k, d);
    }
    let mut pinned = HashMap::new();
    for (k, v) in dims.unwrap_or_default() {
        let d = dim(&format!("dims['{k}']"), v)?;
        pinned.insert(k, d);
    }
    let scheme = match quantize.as_deref() {
        None => None,
        Some("int8") => Some(Scheme::Int8),
        Some("int8-dynamic") => Some(Scheme::Int8Dynamic),
        Some(q) => return Err(CompileError::new_err(format!("quantize='{q}': dlc knows 'int8' and 'int8-dynamic'"))),
    };
    let opts = dlc_driver::Options {
        target,
        cpu,
        input_shapes: shapes,
        dims: pinned,
        sequence_lengths: sequence_lengths.unwrap_or_default(),
        absent: absent.unwrap_or_default().into_iter().collect(),
        name,
        no_opt,
        quant: QuantizeArgs { quantize: scheme, calibrate, ..Default::default() },
        ..Default::default()
    };
    let art = guard(|| {
        py.detach(|| dlc_driver::compile(&model, &out_dir, &opts, &dlc_driver::Silent))
            .map_err(|e| compile_error(py, e))
    })?;
    serde_json::to_string(&art.report).map_err(|e| Error::new_err(e.to_string()))
}

/// The manifest of the artifact in `path` as JSON (for artifacts this machine cannot
/// load: another architecture, CUDA).
#[pyfunction]
fn read_manifest(path: PathBuf) -> PyResult<String> {
    let m = dlc_artifact::Manifest::read_dir(&path)
        .map_err(|e| LoadError::new_err(format!("cannot load artifact '{}': {e}", path.display())))?;
    serde_json::to_string(&m).map_err(|e| Error::new_err(e.to_string()))
}

/// numpy's dtype name for dlc dtype `dtype` (storage-only types: their codes' type), or
/// `None` for one without.
#[pyfunction(name = "numpy_name")]
fn numpy_name_py(dtype: &str) -> Option<&'static str> {
    numpy_name(dtype)
}

/// The file name `dlc run` and `--calibrate` use for a tensor called `name`.
#[pyfunction]
fn npy_file_name(name: &str) -> String {
    dlc_driver::npy::file_name(name)
}

/// The `dlc._dlc` module.
#[pymodule]
fn _dlc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Artifact>()?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(npy_file_name, m)?)?;
    m.add_function(wrap_pyfunction!(read_manifest, m)?)?;
    m.add_function(wrap_pyfunction!(numpy_name_py, m)?)?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("CompileError", py.get_type::<CompileError>())?;
    m.add("UnsupportedOpError", py.get_type::<UnsupportedOpError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("LoadError", py.get_type::<LoadError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
