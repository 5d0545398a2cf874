//! Rule families, one file each. A rule is named, has a doc line, and is a function
//! from an e-class whose e-nodes include an op it looks for to the e-nodes equal to that
//! class; the rule adds them and the runner unions them with the class.
use super::lang::{EGraph, Facts, Node};
use dlc_ir::Op;
use egg::{Id, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};

pub mod algebra;
pub mod epilogue;
pub mod folding;
pub mod fusion;
pub mod patterns;

/// What a rule derives for a class: new e-classes equal to it, each with a name for the
/// node it would become.
pub type Derive = fn(&mut EGraph, Id) -> Vec<(Id, String)>;

/// A named rewrite with its documentation.
pub struct Rule {
    /// Kebab-case name (reported in `rules_fired`).
    pub name: &'static str,
    /// One line: what it rewrites to what.
    pub doc: &'static str,
    /// Which ops the rule looks at (the searcher matches classes holding one).
    pub looks_at: fn(&Op) -> bool,
    /// The rewrite.
    pub derive: Derive,
}

/// Every rule, in a fixed order.
pub fn all() -> Vec<Rule> {
    let mut v = algebra::rules();
    v.extend(folding::rules());
    v.extend(epilogue::rules());
    v.extend(patterns::rules());
    v.extend(fusion::rules());
    v
}

struct Looks(fn(&Op) -> bool);

impl Searcher<Node, Facts> for Looks {
    fn search_eclass_with_limit(&self, egraph: &EGraph, eclass: Id, limit: usize) -> Option<SearchMatches<'_, Node>> {
        let hit = limit > 0
            && egraph[eclass].nodes.iter().any(|n| match n {
                Node::Op(k, _) => egraph.analysis.ops.get(k).is_some_and(|op| (self.0)(op)),
                _ => false,
            });
        hit.then(|| SearchMatches { eclass, substs: vec![Subst::default()], ast: None })
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

struct Apply(Derive);

impl egg::Applier<Node, Facts> for Apply {
    fn apply_one(
        &self,
        egraph: &mut EGraph,
        eclass: Id,
        _: &Subst,
        _: Option<&egg::PatternAst<Node>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let mut changed = Vec::new();
        for (id, name) in (self.0)(egraph, eclass) {
            // A rule must preserve the type; one that does not is skipped, not applied.
            if egraph[id].data.ty != egraph[eclass].data.ty {
                tracing::warn!(%rule, "rule derived a value of another type; skipped");
                continue;
            }
            if egraph[id].data.name.is_empty() {
                egraph[id].data.name = name;
            }
            if egraph.union(eclass, id) {
                changed.push(id);
            }
        }
        changed
    }
}

impl Rule {
    /// The egg rewrite.
    pub fn rewrite(&self) -> Rewrite<Node, Facts> {
        Rewrite::new(self.name, Looks(self.looks_at), Apply(self.derive)).expect("rules bind no variables")
    }
}

/// The name of class `id`, with `suffix`.
pub fn named(egraph: &EGraph, id: Id, suffix: &str) -> String {
    format!("{}{suffix}", egraph[id].data.name)
}
