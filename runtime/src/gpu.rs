//! CUDA artifacts (`model.ptx`, `launch.json`, `model.weights`, `model.sim.so`): the
//! launch table run on a GPU through the driver ([`GpuModel::run_cuda`]), or simulated
//! on the CPU ([`GpuModel::run_simulated`]): the same kernels compiled for the host, one
//! call per thread block, the grid walked as loops. Both resolve the table's buffers the
//! same way: inputs, outputs, one arena, the weights.
use crate::cuda::{Context, Driver};
use crate::{order_inputs, AlignedBuf, RuntimeError, Tensor};
use dlc_artifact::{dtype_size, files, BufferRef, LaunchTable, Manifest};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Whether a manifest describes a CUDA artifact.
pub(crate) fn is_cuda(m: &Manifest) -> bool {
    m.target_triple.starts_with("nvptx")
}

/// A CUDA artifact, loaded.
pub struct GpuModel {
    dir: PathBuf,
    manifest: Manifest,
    table: LaunchTable,
    weights: Vec<u8>,
}

/// A simulated kernel: `(args, block_x, block_y, block_z)`.
type SimKernel = unsafe extern "C" fn(*const *mut u8, i64, i64, i64);

impl GpuModel {
    /// Reads the manifest, launch table and weights of the CUDA artifact in `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<GpuModel, RuntimeError> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::read_dir(&dir)?;
        if !is_cuda(&manifest) {
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
        Ok(GpuModel { dir, manifest, table, weights })
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
        let path = self.dir.join(files::SIM_LIB);
        let lib_err = |message: String| RuntimeError::Library { path: path.clone(), message };
        // SAFETY: the library is dlc's generated code, which has no initialisers.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| lib_err(e.to_string()))?;
        let copy = |data: &[u8]| {
            let b = AlignedBuf::new(data.len());
            // SAFETY: the buffer holds at least `data.len()` bytes.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), b.ptr, data.len()) };
            b
        };
        let ins: Vec<AlignedBuf> = ordered.iter().map(|t| copy(&t.data)).collect();
        let sizes = self.output_sizes();
        let outs: Vec<AlignedBuf> = sizes.iter().map(|(n, _)| AlignedBuf::new(*n)).collect();
        let weights = copy(&self.weights);
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
        for l in &self.table.launches {
            // SAFETY: the symbol is a simulated kernel of the signature above (the
            // compiler emits one per launch under the launch's kernel name).
            let k: SimKernel = *unsafe { lib.get::<SimKernel>(l.kernel.as_bytes()) }
                .map_err(|e| lib_err(format!("kernel '{}': {e}", l.kernel)))?;
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

    /// Runs the kernels on GPU 0 `1 + repeats` times (weights uploaded once), and returns
    /// the outputs and the wall time of each run after the first, in seconds (launches
    /// and the wait for them; inputs stay on the device).
    pub fn run_cuda_timed(
        &self,
        inputs: &[(&str, &Tensor)],
        repeats: usize,
    ) -> Result<(Vec<Tensor>, Vec<f64>), RuntimeError> {
        let ordered = order_inputs(&self.manifest, inputs)?;
        let driver = Driver::load()?;
        let ctx = driver.context(0)?;
        let ptx_path = self.dir.join(files::PTX);
        let ptx = std::fs::read_to_string(&ptx_path)
            .map_err(|e| RuntimeError::Library { path: ptx_path.clone(), message: e.to_string() })?;
        let names: Vec<&str> = self.table.launches.iter().map(|l| l.kernel.as_str()).collect();
        let kernels = ctx.load_ptx(&ptx, &names)?;
        let upload = |data: &[u8]| -> Result<_, RuntimeError> {
            let b = ctx.alloc(data.len())?;
            b.upload(data)?;
            Ok(b)
        };
        let weights = upload(&self.weights)?;
        let arena = ctx.alloc(self.table.arena_bytes as usize)?;
        let ins = ordered.iter().map(|t| upload(&t.data)).collect::<Result<Vec<_>, _>>()?;
        let sizes = self.output_sizes();
        let outs = sizes.iter().map(|(n, _)| ctx.alloc(*n)).collect::<Result<Vec<_>, _>>()?;
        let at = |r: BufferRef| match r {
            BufferRef::Input(i) => ins[i].device_ptr(),
            BufferRef::Output(i) => outs[i].device_ptr(),
            BufferRef::Weight(o) => weights.device_ptr() + o,
            BufferRef::Arena(o) => arena.device_ptr() + o,
        };
        let once = |ctx: &Context<'_>| -> Result<(), RuntimeError> {
            for (l, k) in self.table.launches.iter().zip(&kernels) {
                let mut ptrs: Vec<u64> = l.args.iter().map(|a| at(*a)).collect();
                let mut args: Vec<*mut std::ffi::c_void> = ptrs.iter_mut().map(|p| (p as *mut u64).cast()).collect();
                // SAFETY: the kernel takes one device pointer per table argument, each
                // into a live allocation sized by the compiler's plan.
                unsafe { ctx.launch(*k, l.grid, l.block, 0, &mut args)? };
            }
            for c in &self.table.copies {
                // SAFETY: both ranges lie in the allocations above.
                unsafe { ctx.copy_device(outs[c.output].device_ptr(), at(c.from), c.bytes as usize)? };
            }
            ctx.synchronize()?;
            Ok(())
        };
        once(&ctx)?;
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let t = Instant::now();
            once(&ctx)?;
            times.push(t.elapsed().as_secs_f64());
        }
        let mut host = Vec::new();
        for (b, (n, _)) in outs.iter().zip(&sizes) {
            let mut v = vec![0u8; *n];
            b.download(&mut v)?;
            host.push(v);
        }
        Ok((self.tensors(host), times))
    }

    /// Runs the kernels once on GPU 0.
    pub fn run_cuda(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>, RuntimeError> {
        Ok(self.run_cuda_timed(inputs, 0)?.0)
    }
}
