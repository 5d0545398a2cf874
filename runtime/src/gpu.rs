//! CUDA artifacts (`model.ptx`, `launch.json`, `model.weights`, `model.sim.so`): the
//! launch table run on a GPU through the driver ([`GpuModel::run_cuda`]), or simulated
//! on the CPU ([`GpuModel::run_simulated`]): the same kernels compiled for the host, one
//! call per thread block, the grid walked as loops. Both resolve the table's buffers the
//! same way: inputs, outputs, one arena, the weights.
use crate::cuda::{Context, DeviceBuffer, Driver, Kernel};
use crate::{order_inputs, AlignedBuf, RuntimeError, Tensor};
use dlc_artifact::{dtype_size, files, BufferRef, LaunchTable, Manifest};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// A CUDA artifact, loaded.
pub struct GpuModel {
    dir: PathBuf,
    manifest: Manifest,
    table: LaunchTable,
    /// `model.weights`, 64-byte aligned.
    weights: AlignedBuf,
    /// `model.sim.so` and its kernels in launch order, opened on the first simulated run.
    simulation: OnceLock<Simulation>,
}

/// A simulated kernel: `(args, block_x, block_y, block_z)`.
type SimKernel = unsafe extern "C" fn(*const *mut u8, i64, i64, i64);

/// The simulation library and its kernels, one per launch.
struct Simulation {
    kernels: Vec<SimKernel>,
    // Keeps the code mapped while `kernels` point into it.
    _lib: libloading::Library,
}

/// Bounds-checks a launch table against the manifest: every buffer a launch or copy
/// names exists (input and output indices), every weight and arena offset lies inside
/// its buffer, and every copy stays inside its source and writes exactly its output's
/// size. (What a kernel reads past its argument's offset is the compiled code's own
/// contract with the plan.)
fn check_table(t: &LaunchTable, m: &Manifest) -> Result<(), String> {
    // An argument (`bytes` 0) starts inside its buffer (or at 0 of an empty one); a copy's
    // whole range lies inside.
    let inside = |o: u64, bytes: u64, size: u64| {
        if bytes == 0 {
            o < size || o == 0
        } else {
            o.checked_add(bytes).is_some_and(|end| end <= size)
        }
    };
    let fits = |r: &BufferRef, bytes: u64| -> Result<(), String> {
        match *r {
            BufferRef::Input(i) if i >= m.inputs.len() => Err(format!("input {i} of {}", m.inputs.len())),
            BufferRef::Output(i) if i >= m.outputs.len() => Err(format!("output {i} of {}", m.outputs.len())),
            BufferRef::Weight(o) if !inside(o, bytes, t.weight_bytes) => {
                Err(format!("weight offset {o} (+{bytes}) past the {} weight bytes", t.weight_bytes))
            }
            BufferRef::Arena(o) if !inside(o, bytes, t.arena_bytes) => {
                Err(format!("arena offset {o} (+{bytes}) past the {}-byte arena", t.arena_bytes))
            }
            _ => Ok(()),
        }
    };
    for l in &t.launches {
        for a in &l.args {
            fits(a, 0).map_err(|e| format!("launch of '{}': {e}", l.kernel))?;
        }
    }
    for c in &t.copies {
        let spec =
            m.outputs.get(c.output).ok_or_else(|| format!("copy to output {} of {}", c.output, m.outputs.len()))?;
        let want = spec.fixed_shape().unwrap_or_default().iter().product::<u64>()
            * dtype_size(&spec.dtype).unwrap_or(0) as u64;
        if c.bytes != want {
            return Err(format!("copy of {} bytes to output '{}' of {want}", c.bytes, spec.name));
        }
        fits(&c.from, c.bytes).map_err(|e| format!("copy to output '{}': {e}", spec.name))?;
    }
    Ok(())
}

impl GpuModel {
    /// Reads the manifest, launch table and weights of the CUDA artifact in `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<GpuModel, RuntimeError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::read_dir(&dir)?;
        if !manifest.is_cuda() {
            return Err(RuntimeError::Kind {
                dir,
                reason: format!("was compiled for {}, not CUDA; run it without --simulate", manifest.target_triple),
            });
        }
        let table = LaunchTable::read_dir(&dir)?;
        let path = dir.join(files::WEIGHTS);
        let weights =
            std::fs::read(&path).map_err(|e| RuntimeError::Library { path: path.clone(), message: e.to_string() })?;
        if weights.len() as u64 != table.weight_bytes {
            return Err(RuntimeError::Library {
                path,
                message: format!("{} bytes, the launch table expects {}", weights.len(), table.weight_bytes),
            });
        }
        check_table(&table, &manifest).map_err(|message| RuntimeError::Library {
            path: dir.join(files::LAUNCH),
            message: format!("{message}; the launch table does not fit the manifest (edited?), recompile the model"),
        })?;
        let weights = AlignedBuf::copy_of(&weights);
        Ok(GpuModel { dir, manifest, table, weights, simulation: OnceLock::new() })
    }

    /// The artifact's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The launch table.
    pub fn launch_table(&self) -> &LaunchTable {
        &self.table
    }

    fn output_sizes(&self) -> Vec<(usize, Vec<u64>)> {
        self.manifest
            .outputs
            .iter()
            .map(|s| {
                let shape = s.fixed_shape().unwrap_or_default();
                (shape.iter().product::<u64>() as usize * dtype_size(&s.dtype).unwrap_or(0), shape)
            })
            .collect()
    }

    fn tensors(&self, bufs: Vec<Vec<u8>>) -> Vec<Tensor> {
        self.manifest
            .outputs
            .iter()
            .zip(bufs.into_iter().zip(self.output_sizes()))
            .map(|(spec, (data, (_, shape)))| Tensor { dtype: spec.dtype.clone(), shape, data })
            .collect()
    }

    /// Runs the kernels on the CPU: `model.sim.so` holds them compiled for the host, one
    /// call per block; the grid is walked in order (x fastest).
    pub fn run_simulated(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>, RuntimeError> {
        let ordered = order_inputs(&self.manifest, inputs)?;
        let sim = self.simulation()?;
        let ins: Vec<AlignedBuf> = ordered.iter().map(|t| AlignedBuf::copy_of(&t.data)).collect();
        let sizes = self.output_sizes();
        let outs: Vec<AlignedBuf> = sizes.iter().map(|(n, _)| AlignedBuf::new(*n)).collect();
        let weights = &self.weights;
        let arena = AlignedBuf::new(self.table.arena_bytes as usize);
        let at = |r: BufferRef| -> *mut u8 {
            // SAFETY: offsets come from the compiler's plan of these very buffers.
            unsafe {
                match r {
                    BufferRef::Input(i) => ins[i].ptr,
                    BufferRef::Output(i) => outs[i].ptr,
                    BufferRef::Weight(o) => weights.ptr.add(o as usize),
                    BufferRef::Arena(o) => arena.ptr.add(o as usize),
                }
            }
        };
        for (l, k) in self.table.launches.iter().zip(&sim.kernels) {
            let argv: Vec<*mut u8> = l.args.iter().map(|a| at(*a)).collect();
            for z in 0..l.grid[2] {
                for y in 0..l.grid[1] {
                    for x in 0..l.grid[0] {
                        // SAFETY: every pointer covers what the kernel reads and writes
                        // (sizes from the same plan), and the block index is in the grid.
                        unsafe { k(argv.as_ptr(), x as i64, y as i64, z as i64) };
                    }
                }
            }
        }
        for c in &self.table.copies {
            // SAFETY: both ranges hold `bytes` bytes (the output's size).
            unsafe { std::ptr::copy(at(c.from), outs[c.output].ptr, c.bytes as usize) };
        }
        Ok(self.tensors(outs.iter().zip(&sizes).map(|(b, (n, _))| b.as_slice(*n).to_vec()).collect()))
    }

    /// The simulation library, opened and its kernels resolved on first use.
    fn simulation(&self) -> Result<&Simulation, RuntimeError> {
        if let Some(s) = self.simulation.get() {
            return Ok(s);
        }
        let path = self.dir.join(files::SIM_LIB);
        let lib_err = |message: String| RuntimeError::Library { path: path.clone(), message };
        // SAFETY: the library is dlc's generated code, which has no initialisers.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| lib_err(e.to_string()))?;
        let mut kernels = Vec::with_capacity(self.table.launches.len());
        for l in &self.table.launches {
            // SAFETY: the symbol is a simulated kernel of the signature above (the
            // compiler emits one per launch under the launch's kernel name).
            let k: SimKernel = *unsafe { lib.get::<SimKernel>(l.kernel.as_bytes()) }
                .map_err(|e| lib_err(format!("kernel '{}': {e}", l.kernel)))?;
            kernels.push(k);
        }
        // A concurrent first run may have set it meanwhile; either copy is the same.
        Ok(self.simulation.get_or_init(|| Simulation { kernels, _lib: lib }))
    }

    /// A session on GPU 0 of `driver`: the PTX loaded, the weights uploaded and the
    /// arena, inputs and outputs allocated once, for any number of runs.
    pub fn cuda_session<'d>(&'d self, driver: &'d Driver) -> Result<CudaSession<'d>, RuntimeError> {
        let ctx = driver.context(0)?;
        let ptx_path = self.dir.join(files::PTX);
        let ptx = std::fs::read_to_string(&ptx_path)
            .map_err(|e| RuntimeError::Library { path: ptx_path.clone(), message: e.to_string() })?;
        let names: Vec<&str> = self.table.launches.iter().map(|l| l.kernel.as_str()).collect();
        let kernels = ctx.load_ptx(&ptx, &names)?;
        let host_weights = self.weights.as_slice(self.table.weight_bytes as usize);
        let weights = ctx.alloc(host_weights.len())?;
        weights.upload(host_weights)?;
        let arena = ctx.alloc(self.table.arena_bytes as usize)?;
        let ins = self
            .manifest
            .inputs
            .iter()
            .map(|s| {
                let n = s.fixed_shape().unwrap_or_default().iter().product::<u64>() as usize;
                ctx.alloc(n * dtype_size(&s.dtype).unwrap_or(0))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outs = self.output_sizes().iter().map(|(n, _)| ctx.alloc(*n)).collect::<Result<Vec<_>, _>>()?;
        Ok(CudaSession { model: self, kernels, weights, arena, ins, outs, ctx })
    }

    /// Runs the kernels on GPU 0 `1 + repeats` times in one session, and returns the
    /// outputs and the wall time of each run after the first, in seconds (launches and
    /// the wait for them; inputs stay on the device).
    pub fn run_cuda_timed(
        &self,
        inputs: &[(&str, &Tensor)],
        repeats: usize,
    ) -> Result<(Vec<Tensor>, Vec<f64>), RuntimeError> {
        let driver = Driver::load()?;
        let mut session = self.cuda_session(&driver)?;
        session.set_inputs(inputs)?;
        session.run()?;
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let t = Instant::now();
            session.run()?;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok((session.outputs()?, times))
    }

    /// Runs the kernels once on GPU 0.
    pub fn run_cuda(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>, RuntimeError> {
        Ok(self.run_cuda_timed(inputs, 0)?.0)
    }
}

/// Device buffers and the loaded module of one [`GpuModel`] on one GPU.
pub struct CudaSession<'d> {
    model: &'d GpuModel,
    kernels: Vec<Kernel>,
    // Buffers before the context: fields drop in order, and memory goes before its context.
    weights: DeviceBuffer<'d>,
    arena: DeviceBuffer<'d>,
    ins: Vec<DeviceBuffer<'d>>,
    outs: Vec<DeviceBuffer<'d>>,
    ctx: Context<'d>,
}

impl CudaSession<'_> {
    /// Checks the inputs against the manifest and copies them to the device.
    pub fn set_inputs(&mut self, inputs: &[(&str, &Tensor)]) -> Result<(), RuntimeError> {
        for (buf, t) in self.ins.iter().zip(order_inputs(&self.model.manifest, inputs)?) {
            buf.upload(&t.data)?;
        }
        Ok(())
    }

    fn at(&self, r: BufferRef) -> u64 {
        match r {
            BufferRef::Input(i) => self.ins[i].device_ptr(),
            BufferRef::Output(i) => self.outs[i].device_ptr(),
            BufferRef::Weight(o) => self.weights.device_ptr() + o,
            BufferRef::Arena(o) => self.arena.device_ptr() + o,
        }
    }

    /// Launches the table in order and waits for it.
    pub fn run(&self) -> Result<(), RuntimeError> {
        let table = &self.model.table;
        for (l, k) in table.launches.iter().zip(&self.kernels) {
            let mut ptrs: Vec<u64> = l.args.iter().map(|a| self.at(*a)).collect();
            let mut args: Vec<*mut std::ffi::c_void> = ptrs.iter_mut().map(|p| (p as *mut u64).cast()).collect();
            // SAFETY: the kernel takes one device pointer per table argument, each into a
            // live allocation sized by the compiler's plan.
            unsafe { self.ctx.launch(*k, l.grid, l.block, 0, &mut args)? };
        }
        for c in &table.copies {
            // SAFETY: both ranges lie in this session's allocations.
            unsafe { self.ctx.copy_device(self.outs[c.output].device_ptr(), self.at(c.from), c.bytes as usize)? };
        }
        self.ctx.synchronize()?;
        Ok(())
    }

    /// The outputs of the last run, copied back, in manifest order.
    pub fn outputs(&self) -> Result<Vec<Tensor>, RuntimeError> {
        let mut host = Vec::new();
        for (b, (n, _)) in self.outs.iter().zip(self.model.output_sizes()) {
            let mut v = vec![0u8; n];
            b.download(&mut v)?;
            host.push(v);
        }
        Ok(self.model.tensors(host))
    }
}
