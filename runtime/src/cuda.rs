//! The CUDA driver API, opened at run time with libloading (`libcuda.so.1`, or the file
//! `DLC_CUDA_DRIVER` names): nothing CUDA is linked at build time, so a machine without
//! a GPU builds and tests everything, and a program that never touches CUDA never loads
//! it. [`Driver::load`] resolves every entry point dlc uses up front, so a missing or
//! wrong library is one clear error before any work; [`Driver::devices`] initialises
//! the driver and lists the GPUs; a [`Context`] loads PTX modules, allocates device
//! memory, copies and launches.
//!
//! [`crate::GpuModel`] runs CUDA artifacts through it. On machines without a driver the
//! tests exercise it up to the driver call (the error).
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

/// What went wrong with CUDA.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No driver library could be opened.
    #[error("cannot open the CUDA driver (tried {tried}): {reason}; running CUDA artifacts needs an NVIDIA GPU and its driver")]
    NoDriver {
        /// The file names tried, comma-separated.
        tried: String,
        /// The loader's last message.
        reason: String,
    },
    /// The library lacks an entry point dlc needs (not a CUDA driver, or too old).
    #[error("'{library}' has no '{symbol}': not a CUDA driver library, or one too old for dlc")]
    MissingSymbol {
        /// The library opened.
        library: String,
        /// The entry point.
        symbol: &'static str,
    },
    /// A driver call failed.
    #[error("{call} failed: {name} ({code}){detail}")]
    Call {
        /// The driver function.
        call: &'static str,
        /// The CUresult code.
        code: i32,
        /// Its name from the driver (`CUDA_ERROR_NO_DEVICE`...).
        name: String,
        /// More context, if any.
        detail: String,
    },
    /// PTX text with an interior NUL.
    #[error("the PTX module text contains a NUL byte")]
    BadPtx,
}

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;
type CuModule = *mut c_void;
type CuFunction = *mut c_void;
type CuDevicePtr = u64;

/// The driver entry points dlc uses (the `_v2` ones where CUDA renamed them).
struct Api {
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    device_get_count: unsafe extern "C" fn(*mut c_int) -> CuResult,
    device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult,
    ctx_create: unsafe extern "C" fn(*mut CuContext, c_uint, CuDevice) -> CuResult,
    ctx_destroy: unsafe extern "C" fn(CuContext) -> CuResult,
    ctx_synchronize: unsafe extern "C" fn() -> CuResult,
    module_load_data: unsafe extern "C" fn(*mut CuModule, *const c_void) -> CuResult,
    module_get_function: unsafe extern "C" fn(*mut CuFunction, CuModule, *const c_char) -> CuResult,
    mem_alloc: unsafe extern "C" fn(*mut CuDevicePtr, usize) -> CuResult,
    mem_free: unsafe extern "C" fn(CuDevicePtr) -> CuResult,
    memcpy_htod: unsafe extern "C" fn(CuDevicePtr, *const c_void, usize) -> CuResult,
    memcpy_dtoh: unsafe extern "C" fn(*mut c_void, CuDevicePtr, usize) -> CuResult,
    memcpy_dtod: unsafe extern "C" fn(CuDevicePtr, CuDevicePtr, usize) -> CuResult,
    #[allow(clippy::type_complexity)]
    launch_kernel: unsafe extern "C" fn(
        CuFunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        *mut c_void,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> CuResult,
    get_error_name: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
}

/// The opened driver library and its entry points.
pub struct Driver {
    api: Api,
    _lib: libloading::Library,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Driver")
    }
}

/// The library names tried, in order: `DLC_CUDA_DRIVER` if set, else the driver's soname
/// and its development link.
fn candidates() -> Vec<String> {
    match std::env::var("DLC_CUDA_DRIVER") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => vec!["libcuda.so.1".into(), "libcuda.so".into()],
    }
}

impl Driver {
    /// Opens the driver library and resolves every entry point (no driver call yet).
    pub fn load() -> Result<Driver, CudaError> {
        Self::load_from(&candidates())
    }

    /// [`Driver::load`] from the first of `names` that opens.
    pub fn load_from(names: &[String]) -> Result<Driver, CudaError> {
        let mut reason = String::new();
        for name in names {
            // SAFETY: loading the CUDA driver runs its initialisers, which is what
            // using CUDA means; no other code of this process depends on it.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => return Self::resolve(lib, name),
                Err(e) => reason = e.to_string(),
            }
        }
        Err(CudaError::NoDriver { tried: names.join(", "), reason })
    }

    fn resolve(lib: libloading::Library, name: &str) -> Result<Driver, CudaError> {
        macro_rules! sym {
            ($s:literal) => {{
                // SAFETY: the symbol is looked up with the driver API's documented C
                // signature, which the field's type spells out.
                let f = unsafe { lib.get(concat!($s, "\0").as_bytes()) }
                    .map_err(|_| CudaError::MissingSymbol { library: name.to_string(), symbol: $s })?;
                *f
            }};
        }
        let api = Api {
            init: sym!("cuInit"),
            device_get_count: sym!("cuDeviceGetCount"),
            device_get: sym!("cuDeviceGet"),
            device_get_name: sym!("cuDeviceGetName"),
            ctx_create: sym!("cuCtxCreate_v2"),
            ctx_destroy: sym!("cuCtxDestroy_v2"),
            ctx_synchronize: sym!("cuCtxSynchronize"),
            module_load_data: sym!("cuModuleLoadData"),
            module_get_function: sym!("cuModuleGetFunction"),
            mem_alloc: sym!("cuMemAlloc_v2"),
            mem_free: sym!("cuMemFree_v2"),
            memcpy_htod: sym!("cuMemcpyHtoD_v2"),
            memcpy_dtoh: sym!("cuMemcpyDtoH_v2"),
            memcpy_dtod: sym!("cuMemcpyDtoD_v2"),
            launch_kernel: sym!("cuLaunchKernel"),
            get_error_name: sym!("cuGetErrorName"),
        };
        Ok(Driver { api, _lib: lib })
    }

    fn check(&self, call: &'static str, code: CuResult) -> Result<(), CudaError> {
        if code == 0 {
            return Ok(());
        }
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: cuGetErrorName writes a pointer to a static string or leaves it null.
        let name = if unsafe { (self.api.get_error_name)(code, &mut p) } == 0 && !p.is_null() {
            // SAFETY: the driver returned a NUL-terminated static string.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        } else {
            "unknown error".into()
        };
        let detail = if code == 100 { ": this machine has no CUDA device".into() } else { String::new() };
        Err(CudaError::Call { call, code, name, detail })
    }

    /// Initialises the driver and names every GPU it sees (in device order).
    pub fn devices(&self) -> Result<Vec<String>, CudaError> {
        // SAFETY: documented driver calls with valid out-pointers.
        unsafe {
            self.check("cuInit", (self.api.init)(0))?;
            let mut n = 0;
            self.check("cuDeviceGetCount", (self.api.device_get_count)(&mut n))?;
            let mut names = Vec::new();
            for i in 0..n {
                let mut d = 0;
                self.check("cuDeviceGet", (self.api.device_get)(&mut d, i))?;
                let mut buf = [0 as c_char; 256];
                self.check("cuDeviceGetName", (self.api.device_get_name)(buf.as_mut_ptr(), buf.len() as c_int, d))?;
                names.push(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned());
            }
            Ok(names)
        }
    }

    /// A context on GPU `ordinal` (after [`Driver::devices`] or on its own).
    pub fn context(&self, ordinal: usize) -> Result<Context<'_>, CudaError> {
        // SAFETY: documented driver calls with valid out-pointers.
        unsafe {
            self.check("cuInit", (self.api.init)(0))?;
            let mut d = 0;
            self.check("cuDeviceGet", (self.api.device_get)(&mut d, ordinal as c_int))?;
            let mut ctx = std::ptr::null_mut();
            self.check("cuCtxCreate", (self.api.ctx_create)(&mut ctx, 0, d))?;
            Ok(Context { driver: self, ctx })
        }
    }
}

/// A CUDA context: modules, device memory and launches on one GPU (current on the
/// thread that made it). Destroyed on drop.
#[derive(Debug)]
pub struct Context<'d> {
    driver: &'d Driver,
    ctx: CuContext,
}

/// A kernel function of a loaded module.
#[derive(Debug, Clone, Copy)]
pub struct Kernel(CuFunction);

/// Device memory of a context, freed on drop (drop it before its context).
#[derive(Debug)]
pub struct DeviceBuffer<'d> {
    driver: &'d Driver,
    ptr: CuDevicePtr,
    bytes: usize,
}

impl<'d> Context<'d> {
    /// Loads a PTX module (the driver JIT-compiles it for the GPU) and looks up kernels.
    pub fn load_ptx(&self, ptx: &str, kernels: &[&str]) -> Result<Vec<Kernel>, CudaError> {
        let text = CString::new(ptx).map_err(|_| CudaError::BadPtx)?;
        let d = self.driver;
        // SAFETY: documented driver calls; `text` outlives the load, names are C strings.
        unsafe {
            let mut m = std::ptr::null_mut();
            d.check("cuModuleLoadData", (d.api.module_load_data)(&mut m, text.as_ptr().cast()))?;
            kernels
                .iter()
                .map(|k| {
                    let name = CString::new(*k).map_err(|_| CudaError::BadPtx)?;
                    let mut f = std::ptr::null_mut();
                    d.check("cuModuleGetFunction", (d.api.module_get_function)(&mut f, m, name.as_ptr()))?;
                    Ok(Kernel(f))
                })
                .collect()
        }
    }

    /// Allocates `bytes` of device memory.
    pub fn alloc(&self, bytes: usize) -> Result<DeviceBuffer<'d>, CudaError> {
        let mut ptr = 0;
        // SAFETY: documented driver call with a valid out-pointer.
        self.driver.check("cuMemAlloc", unsafe { (self.driver.api.mem_alloc)(&mut ptr, bytes.max(1)) })?;
        Ok(DeviceBuffer { driver: self.driver, ptr, bytes })
    }

    /// Launches `kernel` on a `grid` of `block`-sized blocks with `shared` bytes of shared
    /// memory on the default stream; `args` are the kernel's parameters (device pointers
    /// and scalars, by address). Launches run in order; [`Context::synchronize`] waits.
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in number, order and types, and
    /// every device pointer must stay valid for the launch.
    pub unsafe fn launch(
        &self,
        kernel: Kernel,
        grid: [u32; 3],
        block: [u32; 3],
        shared: u32,
        args: &mut [*mut c_void],
    ) -> Result<(), CudaError> {
        let d = self.driver;
        // SAFETY: the caller vouches for the arguments; the launch is synchronised.
        unsafe {
            d.check(
                "cuLaunchKernel",
                (d.api.launch_kernel)(
                    kernel.0,
                    grid[0],
                    grid[1],
                    grid[2],
                    block[0],
                    block[1],
                    block[2],
                    shared,
                    std::ptr::null_mut(),
                    args.as_mut_ptr(),
                    std::ptr::null_mut(),
                ),
            )
        }
    }

    /// Waits for every launch and copy so far (and reports a kernel's failure).
    pub fn synchronize(&self) -> Result<(), CudaError> {
        // SAFETY: a documented driver call without arguments.
        self.driver.check("cuCtxSynchronize", unsafe { (self.driver.api.ctx_synchronize)() })
    }

    /// Copies `bytes` bytes between device addresses.
    ///
    /// # Safety
    /// Both ranges must lie in live device allocations.
    pub unsafe fn copy_device(&self, dst: u64, src: u64, bytes: usize) -> Result<(), CudaError> {
        // SAFETY: the caller vouches for the ranges.
        self.driver.check("cuMemcpyDtoD", unsafe { (self.driver.api.memcpy_dtod)(dst, src, bytes) })
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: the context was created by this object and is destroyed once.
        let _ = unsafe { (self.driver.api.ctx_destroy)(self.ctx) };
    }
}

impl DeviceBuffer<'_> {
    /// The device address (what a kernel parameter holds).
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }

    /// Copies `data` (at most the buffer's size) to the device.
    pub fn upload(&self, data: &[u8]) -> Result<(), CudaError> {
        let n = data.len().min(self.bytes);
        let d = self.driver;
        // SAFETY: `n` bytes are readable at `data` and writable at `ptr`.
        d.check("cuMemcpyHtoD", unsafe { (d.api.memcpy_htod)(self.ptr, data.as_ptr().cast(), n) })
    }

    /// Copies the buffer (at most `out.len()` bytes) back to the host.
    pub fn download(&self, out: &mut [u8]) -> Result<(), CudaError> {
        let n = out.len().min(self.bytes);
        let d = self.driver;
        // SAFETY: `n` bytes are readable at `ptr` and writable at `out`.
        d.check("cuMemcpyDtoH", unsafe { (d.api.memcpy_dtoh)(out.as_mut_ptr().cast(), self.ptr, n) })
    }
}

impl Drop for DeviceBuffer<'_> {
    fn drop(&mut self) {
        // SAFETY: the allocation belongs to this buffer and is freed once.
        let _ = unsafe { (self.driver.api.mem_free)(self.ptr) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without an NVIDIA driver (CI, this machine) loading fails with the clear error;
    /// with one, it lists the GPUs.
    #[test]
    fn a_library_that_is_not_the_driver_is_named() {
        let e = Driver::load_from(&["libm.so.6".into()]).expect_err("libm is no CUDA driver");
        assert_eq!(e.to_string(), "'libm.so.6' has no 'cuInit': not a CUDA driver library, or one too old for dlc");
        let e = Driver::load_from(&["/nonexistent/libcuda.so.1".into()]).expect_err("no such file");
        assert!(e.to_string().starts_with("cannot open the CUDA driver (tried /nonexistent/libcuda.so.1)"), "{e}");
    }

    #[test]
    fn the_driver_loads_or_says_why_not() {
        match Driver::load() {
            Err(e @ CudaError::NoDriver { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("libcuda.so.1") && msg.contains("needs an NVIDIA GPU"), "{msg}");
            }
            Err(e) => panic!("unexpected: {e}"),
            Ok(d) => match d.devices() {
                Ok(names) => assert!(names.iter().all(|n| !n.is_empty())),
                Err(e) => assert!(matches!(e, CudaError::Call { .. }), "{e}"),
            },
        }
    }
}
