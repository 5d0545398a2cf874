//! dlc-passes: graph-to-graph passes, the pass table that drives pipelines and
//! `--dump-after`, and analyses the backends need (the static memory plan).
//!
//! Invariant: every pass leaves a graph that `dlc_ir::verify` accepts; the pipeline
//! checks this after each pass in debug builds and tests.
#![warn(missing_docs)]

mod conv_orient;
mod dce;
mod denormal_weights;
pub mod egraph;
mod identity_elim;
pub mod memory_plan;
mod promote_half;
pub mod quantize;
mod speculate;
mod stats;
mod transpose_sink;

pub use conv_orient::ConvOrient;
pub use dce::Dce;
pub use denormal_weights::DenormalWeights;
pub use egraph::cost::Roofline;
pub use egraph::{EGraphOpt, Limits, OptReport};
pub use identity_elim::IdentityElim;
pub use memory_plan::{
    if_layout, loop_layout, plan_memory, size_units, IfLayout, Location, LoopLayout, MemoryPlan, Region,
};
pub use promote_half::PromoteHalf;
pub use speculate::speculate_ifs;
pub use stats::{graph_stats, op_flops, GraphStats};
pub use transpose_sink::TransposeSink;

use dlc_ir::Graph;
use std::time::Instant;

/// Errors raised by passes.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A pass left an invalid graph (a compiler bug) or was given one.
    #[error("after pass '{pass}': {source}")]
    Invalid {
        /// The pass.
        pass: &'static str,
        /// What the verifier found.
        source: Box<dlc_ir::IrError>,
    },
    /// `--dump-after` named a pass that does not exist.
    #[error("unknown pass '{0}'; passes are: {1}")]
    UnknownPass(String, String),
}

/// Whether a pass changed the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// The graph was modified.
    Yes,
    /// The graph is as it was.
    No,
}

/// Per-run context: timings and what to dump.
#[derive(Debug, Default)]
pub struct PassCx {
    /// Passes whose output IR should be handed to `on_dump`.
    pub dump_after: Vec<String>,
    /// `(pass, seconds, changed)` for each pass run.
    pub timings: Vec<(&'static str, f64, Changed)>,
    /// IR printed after the passes named in `dump_after`: `(pass, text)`.
    pub dumps: Vec<(&'static str, String)>,
    /// What the e-graph optimiser did, when it ran.
    pub optimizer: Option<OptReport>,
}

/// A graph transformation. Its doc comment states its contract.
pub trait Pass {
    /// Kebab-case name used by `--dump-after`.
    fn name(&self) -> &'static str;
    /// Runs the pass.
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError>;
}

/// The default pipeline, in order: legalisation, then optimisation.
pub fn default_pipeline() -> Vec<Box<dyn Pass>> {
    optimizing_pipeline(EGraphOpt::default())
}

/// The default pipeline with the optimiser configured (a target's roofline, limits).
pub fn optimizing_pipeline(opt: EGraphOpt) -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(PromoteHalf),
        Box::new(IdentityElim),
        Box::new(TransposeSink),
        Box::new(opt),
        Box::new(ConvOrient),
        Box::new(DenormalWeights),
        Box::new(Dce),
    ]
}

/// What must run even with optimisation off (`--no-opt`): rewrites the backends rely on.
pub fn legalize_pipeline() -> Vec<Box<dyn Pass>> {
    vec![Box::new(PromoteHalf), Box::new(Dce)]
}

/// Names of every pass `--dump-after` accepts (`import` is the graph before any pass).
pub fn pass_names() -> Vec<&'static str> {
    let mut v = vec!["import"];
    v.extend(default_pipeline().iter().map(|p| p.name()));
    v
}

/// Runs `passes` in order, verifying after each and recording timings and dumps; then
/// runs them on each loop's body and each if's branches (graphs of their own),
/// innermost first.
pub fn run_pipeline(g: &mut Graph, passes: &[Box<dyn Pass>], cx: &mut PassCx) -> Result<(), PassError> {
    for id in g.node_ids() {
        for b in g.node_mut(id).op.bodies_mut() {
            // The body's own passes record no dumps (`--dump-after` prints a loop's body
            // and an if's branches under their node in the outer graph).
            let mut inner = PassCx { optimizer: None, ..PassCx::default() };
            run_pipeline(std::sync::Arc::make_mut(&mut b.0), passes, &mut inner)?;
            cx.timings.extend(inner.timings);
        }
    }
    run_pipeline_here(g, passes, cx)
}

fn run_pipeline_here(g: &mut Graph, passes: &[Box<dyn Pass>], cx: &mut PassCx) -> Result<(), PassError> {
    let names = pass_names();
    if let Some(bad) = cx.dump_after.iter().find(|d| !names.contains(&d.as_str())) {
        return Err(PassError::UnknownPass(bad.clone(), names.join(", ")));
    }
    dlc_ir::verify(g).map_err(|source| PassError::Invalid { pass: "import", source: Box::new(source) })?;
    if cx.dump_after.iter().any(|d| d == "import") {
        let text =
            dlc_ir::print_graph(g).map_err(|source| PassError::Invalid { pass: "import", source: Box::new(source) })?;
        cx.dumps.push(("import", text));
    }
    for p in passes {
        let t0 = Instant::now();
        let changed = p.run(g, cx)?;
        let secs = t0.elapsed().as_secs_f64();
        tracing::debug!(pass = p.name(), secs, ?changed, "pass done");
        cx.timings.push((p.name(), secs, changed));
        dlc_ir::verify(g).map_err(|source| PassError::Invalid { pass: p.name(), source: Box::new(source) })?;
        if cx.dump_after.iter().any(|d| d == p.name()) {
            let text = dlc_ir::print_graph(g)
                .map_err(|source| PassError::Invalid { pass: p.name(), source: Box::new(source) })?;
            cx.dumps.push((p.name(), text));
        }
    }
    Ok(())
}
