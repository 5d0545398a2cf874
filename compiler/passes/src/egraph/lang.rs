//! The e-graph language and its analysis.
//!
//! An e-node is a leaf (a graph input, or an output of a node kept outside the e-graph),
//! a constant, or an op applied to children. An op is keyed by its canonical text (the
//! mnemonic and every attribute, as the IR printer writes them), so two nodes are the
//! same e-node exactly when the op, its attributes and its operands agree; the
//! analysis maps each key back to the [`Op`]. Every e-class carries the tensor type of
//! its value, a constant's index when it holds one, and a name for the node it becomes.
use dlc_ir::{Op, TensorData, TensorType};
use egg::{Id, Language, Symbol};
use std::collections::HashMap;
use std::fmt;

/// An e-node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// A value the e-graph does not look inside (index into [`Facts::leaves`]).
    Leaf(u32),
    /// A constant (index into [`Facts::consts`]).
    Const(u32),
    /// An op (its canonical key) applied to operands.
    Op(Symbol, Vec<Id>),
}

/// What two e-nodes must share to match: variant, key and arity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Discriminant {
    /// A leaf.
    Leaf(u32),
    /// A constant.
    Const(u32),
    /// An op key and its operand count.
    Op(Symbol, usize),
}

impl Language for Node {
    type Discriminant = Discriminant;

    fn discriminant(&self) -> Discriminant {
        match self {
            Node::Leaf(i) => Discriminant::Leaf(*i),
            Node::Const(i) => Discriminant::Const(*i),
            Node::Op(k, ch) => Discriminant::Op(*k, ch.len()),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        self.discriminant() == other.discriminant()
    }

    fn children(&self) -> &[Id] {
        match self {
            Node::Op(_, ch) => ch,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Node::Op(_, ch) => ch,
            _ => &mut [],
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Leaf(i) => write!(f, "leaf{i}"),
            Node::Const(i) => write!(f, "const{i}"),
            Node::Op(k, _) => write!(f, "{k}"),
        }
    }
}

impl egg::FromOp for Node {
    type Error = String;

    /// Patterns name ops by key: `(relu ?x)` matches Relu, whose key is `relu`.
    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, String> {
        Ok(Node::Op(Symbol::from(op), children))
    }
}

/// The canonical key of an op: what the IR printer writes for it, without operands.
pub fn op_key(op: &Op) -> Symbol {
    let attrs = op.attrs();
    if attrs.is_empty() {
        return Symbol::from(op.mnemonic());
    }
    let list: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Symbol::from(format!("{}{{{}}}", op.mnemonic(), list.join(",")))
}

/// Per-class facts.
#[derive(Debug, Clone)]
pub struct Info {
    /// The value's type; `None` when an op's type rule rejected its operands (such a
    /// node is never extracted).
    pub ty: Option<TensorType>,
    /// The constant this class holds, if any.
    pub konst: Option<u32>,
    /// The name the extracted node gets (the first graph node merged into the class).
    pub name: String,
    /// Whether the value leaves the e-graph (a model output, or an operand of a node kept
    /// outside): fusing it into a consumer would compute it twice.
    pub pinned: bool,
}

/// The analysis: side tables for keys, constants and leaves, plus per-class [`Info`].
#[derive(Debug, Default)]
pub struct Facts {
    /// Op of every key seen.
    pub ops: HashMap<Symbol, Op>,
    /// Constants, indexed by [`Node::Const`].
    pub consts: Vec<TensorData>,
    /// What a rule derived from a match before, by rule and matched operands, so a
    /// rule that fires again on the same match adds nothing (and saturation is
    /// reachable) instead of deriving new constants again.
    pub derived: HashMap<(&'static str, Vec<Id>), Vec<Id>>,
    /// Types of leaves, indexed by [`Node::Leaf`].
    pub leaves: Vec<TensorType>,
}

/// The e-graph dlc optimises.
pub type EGraph = egg::EGraph<Node, Facts>;

impl egg::Analysis<Node> for Facts {
    type Data = Info;

    fn make(egraph: &mut EGraph, enode: &Node, _id: Id) -> Info {
        let a = &egraph.analysis;
        let (ty, konst) = match enode {
            Node::Leaf(i) => (a.leaves.get(*i as usize).cloned(), None),
            Node::Const(i) => (a.consts.get(*i as usize).map(|t| t.ty().clone()), Some(*i)),
            Node::Op(k, ch) => {
                let types: Option<Vec<TensorType>> = ch.iter().map(|c| egraph[*c].data.ty.clone()).collect();
                let ty = match (a.ops.get(k), types) {
                    (Some(op), Some(types)) => {
                        op.infer("egraph", &types).ok().and_then(|mut v| (v.len() == 1).then(|| v.remove(0)))
                    }
                    _ => None,
                };
                (ty, None)
            }
        };
        Info { ty, konst, name: String::new(), pinned: false }
    }

    fn merge(&mut self, a: &mut Info, b: Info) -> egg::DidMerge {
        let mut changed_a = false;
        if a.ty.is_none() && b.ty.is_some() {
            a.ty = b.ty.clone();
            changed_a = true;
        }
        if a.konst.is_none() && b.konst.is_some() {
            a.konst = b.konst;
            changed_a = true;
        }
        if a.name.is_empty() && !b.name.is_empty() {
            a.name = b.name.clone();
        }
        if b.pinned && !a.pinned {
            a.pinned = true;
            changed_a = true;
        }
        let changed_b =
            (b.ty.is_none() && a.ty.is_some()) || (b.konst.is_none() && a.konst.is_some()) || (a.pinned && !b.pinned);
        egg::DidMerge(changed_a, changed_b)
    }
}

/// Adds `op` over `children` when its type rule accepts their types; `None` otherwise.
pub fn add_op(egraph: &mut EGraph, op: Op, children: Vec<Id>) -> Option<Id> {
    let types: Option<Vec<TensorType>> = children.iter().map(|c| egraph[*c].data.ty.clone()).collect();
    let out = op.infer("egraph", &types?).ok()?;
    if out.len() != 1 {
        return None;
    }
    let key = op_key(&op);
    egraph.analysis.ops.entry(key).or_insert(op);
    Some(egraph.add(Node::Op(key, children)))
}

/// Adds a constant.
pub fn add_const(egraph: &mut EGraph, t: TensorData) -> Id {
    let i = egraph.analysis.consts.len() as u32;
    egraph.analysis.consts.push(t);
    egraph.add(Node::Const(i))
}

/// The constants `make` derives for `rule` on the match `operands`, made once: a later
/// firing on the same match gets the same e-classes.
pub fn derived_consts(
    egraph: &mut EGraph,
    rule: &'static str,
    operands: &[Id],
    make: impl FnOnce(&EGraph) -> Option<Vec<TensorData>>,
) -> Option<Vec<Id>> {
    let key = (rule, operands.iter().map(|&c| egraph.find(c)).collect::<Vec<_>>());
    if let Some(ids) = egraph.analysis.derived.get(&key) {
        return Some(ids.clone());
    }
    let ids: Vec<Id> = make(egraph)?.into_iter().map(|t| add_const(egraph, t)).collect();
    egraph.analysis.derived.insert(key, ids.clone());
    Some(ids)
}

/// The constant held by class `id`.
pub fn const_of(egraph: &EGraph, id: Id) -> Option<&TensorData> {
    egraph[id].data.konst.and_then(|i| egraph.analysis.consts.get(i as usize))
}

/// The ops (with operands) among the e-nodes of class `id`.
pub fn ops_of(egraph: &EGraph, id: Id) -> Vec<(Op, Vec<Id>)> {
    egraph[id]
        .nodes
        .iter()
        .filter_map(|n| match n {
            Node::Op(k, ch) => egraph.analysis.ops.get(k).map(|op| (op.clone(), ch.clone())),
            _ => None,
        })
        .collect()
}

/// Whether every use of class `id` ends in class `consumer`: walking up from `id`'s
/// users, every path reaches `consumer` without passing a pinned class, another root,
/// or one of `keep` (the operands the fused node still reads: a path through one of
/// them means `id` is needed to compute it). Then fusing `id` into `consumer` does not
/// duplicate work. Gives up (false) beyond 32 classes.
pub fn used_only_by(egraph: &EGraph, id: Id, consumer: Id, keep: &[Id]) -> bool {
    let (id, target) = (egraph.find(id), egraph.find(consumer));
    let keep: Vec<Id> = keep.iter().map(|&k| egraph.find(k)).collect();
    if egraph[id].data.pinned {
        return false;
    }
    let mut stack: Vec<Id> = egraph[id].parents().map(|p| egraph.find(p)).collect();
    let mut seen: Vec<Id> = Vec::new();
    while let Some(c) = stack.pop() {
        if keep.contains(&c) {
            return false;
        }
        if c == target || seen.contains(&c) {
            continue;
        }
        seen.push(c);
        let parents: Vec<Id> = egraph[c].parents().map(|p| egraph.find(p)).collect();
        if seen.len() > 32 || egraph[c].data.pinned || parents.is_empty() {
            return false;
        }
        stack.extend(parents);
    }
    true
}

/// The type of class `id`.
pub fn ty_of(egraph: &EGraph, id: Id) -> Option<&TensorType> {
    egraph[id].data.ty.as_ref()
}
