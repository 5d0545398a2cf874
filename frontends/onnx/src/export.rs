//! Writes a [`dlc_ir::Graph`] as an ONNX model (opset 20), so a model written in dlc's
//! own language can be run by ONNX Runtime and other tools. Constants become
//! initializers, symbolic dims `dim_param`s, and each op its ONNX node (operands that
//! ONNX takes as inputs, such as Reshape's shape or Clip's bounds, become initializers).
//! Ops that only the optimiser makes (fused kernels, epilogues, attention) and ops ONNX
//! lacks are errors naming the node: export runs on the graph as imported.
use crate::ops::elementwise::PLAIN;
use crate::tensor::dtype_from_onnx;
use dlc_ir::ops::{Activation, Attr, SoftmaxMode};
use dlc_ir::{DType, Dim, Graph, Op, TensorData, TensorType, Value};
use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto, Message, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use std::collections::HashMap;

/// The ONNX opset the export targets.
pub const EXPORT_OPSET: i64 = 20;

/// Why a graph cannot be written as ONNX.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A node has no ONNX form.
    #[error("node '{node}' ({op}): {reason}")]
    Unsupported {
        /// Node name.
        node: String,
        /// Op mnemonic.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// The graph is malformed (a cycle).
    #[error("{0}")]
    Ir(#[from] dlc_ir::IrError),
}

fn onnx_dtype(d: DType) -> i32 {
    (1..=32).find(|c| dtype_from_onnx(*c) == Some(d)).unwrap_or(0)
}

fn value_info(name: &str, t: &TensorType) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in &t.shape.0 {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.value = Some(match d {
            Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v as i64),
            Dim::Sym(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
        });
        shape.dim.push(dim);
    }
    let mut tt = type_proto::Tensor::new();
    tt.elem_type = onnx_dtype(t.dtype);
    tt.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tt));
    let mut vi = ValueInfoProto::new();
    vi.name = name.to_string();
    vi.type_ = Some(ty).into();
    vi
}

fn tensor(name: &str, data: &TensorData) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.to_string();
    t.data_type = onnx_dtype(data.ty().dtype);
    t.dims = data.ty().shape.as_fixed().unwrap_or_default().iter().map(|&d| d as i64).collect();
    t.raw_data = data.bytes().to_vec();
    t
}

pub(crate) enum A {
    I(i64),
    F(f32),
    S(String),
    Is(Vec<i64>),
}

pub(crate) fn attr(name: &str, a: A) -> AttributeProto {
    let mut p = AttributeProto::new();
    p.name = name.to_string();
    let ty = match a {
        A::I(v) => {
            p.i = v;
            AttributeType::INT
        }
        A::F(v) => {
            p.f = v;
            AttributeType::FLOAT
        }
        A::S(v) => {
            p.s = v.into_bytes();
            AttributeType::STRING
        }
        A::Is(v) => {
            p.ints = v;
            AttributeType::INTS
        }
    };
    p.type_ = ty.into();
    p
}

struct Out {
    graph: GraphProto,
    names: HashMap<Value, String>,
    used: HashMap<String, usize>,
}

impl Out {
    fn unique(&mut self, base: &str) -> String {
        let n = self.used.entry(base.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            base.to_string()
        } else {
            format!("{base}__{}", *n - 1)
        }
    }
    fn node(&mut self, op_type: &str, name: &str, inputs: Vec<String>, output: String, attrs: Vec<AttributeProto>) {
        let mut n = NodeProto::new();
        n.op_type = op_type.to_string();
        n.name = name.to_string();
        n.input = inputs;
        n.output = vec![output];
        n.attribute = attrs;
        self.graph.node.push(n);
    }
    /// An initializer holding `data`; returns its name.
    fn init(&mut self, base: &str, data: TensorData) -> String {
        let name = self.unique(base);
        self.graph.initializer.push(tensor(&name, &data));
        name
    }
    fn ints(&mut self, base: &str, v: &[i64]) -> String {
        self.init(base, TensorData::from_i64(&[v.len() as u64], v).expect("sized"))
    }
}

/// The graph as an ONNX model (opset [`EXPORT_OPSET`]).
pub fn export(g: &Graph) -> Result<ModelProto, ExportError> {
    let mut o = Out { graph: GraphProto::new(), names: HashMap::new(), used: HashMap::new() };
    o.graph.name = g.name.clone();
    // Outputs keep their names; values named alike inside get a suffix.
    let mut reserved: Vec<String> = g.outputs().iter().map(|(n, _)| n.clone()).collect();
    for n in &reserved {
        o.used.insert(n.clone(), 1);
    }
    for id in g.topo_order()? {
        let node = g.node(id);
        let v = Value { node: id, port: 0 };
        let operands: Vec<String> = g.operands(id).iter().map(|x| o.names[x].clone()).collect();
        let unsupported = |reason: &str| ExportError::Unsupported {
            node: node.name.clone(),
            op: node.op.mnemonic(),
            reason: reason.to_string(),
        };
        let out = o.unique(&node.name);
        o.names.insert(v, out.clone());
        let name = node.name.as_str();
        let simple = |o: &mut Out, t: &str| o.node(t, name, operands.clone(), out.clone(), vec![]);
        match &node.op {
            Op::Input(i) => o.graph.input.push(value_info(&out, &i.ty)),
            // Constants nothing reads (operands the importer turned into attributes).
            Op::Const(_) if g.users(id).is_empty() && !g.outputs().iter().any(|(_, x)| x.node == id) => {}
            Op::Const(c) => o.graph.initializer.push(tensor(&out, &c.value)),
            Op::Max(_) => simple(&mut o, "Max"),
            Op::Min(_) => simple(&mut o, "Min"),
            Op::Mod(m) => o.node("Mod", name, operands, out, vec![attr("fmod", A::I(m.fmod as i64))]),
            Op::BitShift(b) => {
                let dir = if b.left { "LEFT" } else { "RIGHT" };
                o.node("BitShift", name, operands, out, vec![attr("direction", A::S(dir.into()))])
            }
            Op::Where(_) => simple(&mut o, "Where"),
            Op::Cast(c) => {
                let attrs = vec![attr("to", A::I(onnx_dtype(c.to) as i64)), attr("saturate", A::I(c.saturate as i64))];
                o.node("Cast", name, operands, out, attrs)
            }
            Op::IsInf(i) => {
                let attrs = vec![
                    attr("detect_negative", A::I(i.detect_negative as i64)),
                    attr("detect_positive", A::I(i.detect_positive as i64)),
                ];
                o.node("IsInf", name, operands, out, attrs)
            }
            Op::Gelu(gl) => {
                let approx = if gl.tanh_approximation { "tanh" } else { "none" };
                o.node("Gelu", name, operands, out, vec![attr("approximate", A::S(approx.into()))])
            }
            Op::Clip(c) => {
                let dt = g.value_type(g.operands(id)[0]).dtype;
                if dt != DType::F32 {
                    return Err(unsupported("Clip bounds are exported for f32 only"));
                }
                let lo = o.init(&format!("{name}.min"), TensorData::from_f32(&[], &[c.min]).expect("scalar"));
                let hi = o.init(&format!("{name}.max"), TensorData::from_f32(&[], &[c.max]).expect("scalar"));
                o.node("Clip", name, vec![operands[0].clone(), lo, hi], out, vec![])
            }
            Op::Expand(e) => {
                let s = o.ints(&format!("{name}.shape"), &e.shape);
                o.node("Expand", name, vec![operands[0].clone(), s], out, vec![])
            }
            Op::MatMul(m) => {
                if m.act != Activation::None || operands.len() != 2 {
                    return Err(unsupported("a fused MatMul epilogue has no ONNX form (export the graph as imported)"));
                }
                simple(&mut o, "MatMul")
            }
            Op::Gemm(gm) => {
                if gm.act != Activation::None {
                    return Err(unsupported("a fused Gemm activation has no ONNX form"));
                }
                let attrs = vec![
                    attr("alpha", A::F(gm.alpha)),
                    attr("beta", A::F(gm.beta)),
                    attr("transA", A::I(gm.trans_a as i64)),
                    attr("transB", A::I(gm.trans_b as i64)),
                ];
                o.node("Gemm", name, operands, out, attrs)
            }
            Op::Einsum(e) => o.node("Einsum", name, operands, out, vec![attr("equation", A::S(e.equation.clone()))]),
            Op::Conv(c) => {
                if c.act != Activation::None || operands.len() > 3 {
                    return Err(unsupported("a fused convolution epilogue has no ONNX form"));
                }
                let mut attrs = window_attrs(&c.kernel_shape, &c.strides, &c.pads, &c.dilations, c.auto_pad);
                attrs.push(attr("group", A::I(c.group)));
                o.node("Conv", name, operands, out, attrs)
            }
            Op::MaxPool(p) => {
                let mut attrs = window_attrs(&p.kernel_shape, &p.strides, &p.pads, &p.dilations, p.auto_pad);
                attrs.push(attr("ceil_mode", A::I(p.ceil_mode as i64)));
                o.node("MaxPool", name, operands, out, attrs)
            }
            Op::AveragePool(p) => {
                let mut attrs = window_attrs(&p.kernel_shape, &p.strides, &p.pads, &p.dilations, p.auto_pad);
                attrs.push(attr("ceil_mode", A::I(p.ceil_mode as i64)));
                attrs.push(attr("count_include_pad", A::I(p.count_include_pad as i64)));
                o.node("AveragePool", name, operands, out, attrs)
            }
            Op::GlobalAveragePool(_) => simple(&mut o, "GlobalAveragePool"),
            Op::BatchNormalization(b) => {
                o.node("BatchNormalization", name, operands, out, vec![attr("epsilon", A::F(b.epsilon))])
            }
            Op::LayerNormalization(l) => {
                if l.rms || l.stats || l.skip {
                    return Err(unsupported("only plain LayerNormalization is exported"));
                }
                let attrs = vec![attr("axis", A::I(l.axis)), attr("epsilon", A::F(l.epsilon))];
                o.node("LayerNormalization", name, operands, out, attrs)
            }
            Op::Softmax(s) => {
                let t = match s.mode {
                    SoftmaxMode::Softmax => "Softmax",
                    SoftmaxMode::LogSoftmax => "LogSoftmax",
                    SoftmaxMode::Hardmax => "Hardmax",
                };
                o.node(t, name, operands, out, vec![attr("axis", A::I(s.axis))])
            }
            Op::ReduceSum(r) => reduce(&mut o, "ReduceSum", name, operands, out, &r.axes, r.keepdims),
            Op::ReduceMean(r) => reduce(&mut o, "ReduceMean", name, operands, out, &r.axes, r.keepdims),
            Op::ReduceMax(r) => reduce(&mut o, "ReduceMax", name, operands, out, &r.axes, r.keepdims),
            Op::ReduceMin(r) => reduce(&mut o, "ReduceMin", name, operands, out, &r.axes, r.keepdims),
            Op::ReduceProd(r) => reduce(&mut o, "ReduceProd", name, operands, out, &r.axes, r.keepdims),
            Op::ReduceL1(r) => reduce(&mut o, "ReduceL1", name, operands, out, &r.axes, r.keepdims),
            Op::ReduceL2(r) => reduce(&mut o, "ReduceL2", name, operands, out, &r.axes, r.keepdims),
            Op::ReduceLogSum(r) => reduce(&mut o, "ReduceLogSum", name, operands, out, &r.axes, r.keepdims),
            Op::ReduceLogSumExp(r) => reduce(&mut o, "ReduceLogSumExp", name, operands, out, &r.axes, r.keepdims),
            Op::ReduceSumSquare(r) => reduce(&mut o, "ReduceSumSquare", name, operands, out, &r.axes, r.keepdims),
            Op::ArgMax(a) => o.node("ArgMax", name, operands, out, arg_attrs(a.axis, a.keepdims, a.select_last_index)),
            Op::ArgMin(a) => o.node("ArgMin", name, operands, out, arg_attrs(a.axis, a.keepdims, a.select_last_index)),
            Op::Reshape(r) => {
                let s = o.ints(&format!("{name}.shape"), &r.shape);
                o.node(
                    "Reshape",
                    name,
                    vec![operands[0].clone(), s],
                    out,
                    vec![attr("allowzero", A::I(r.allowzero as i64))],
                )
            }
            Op::Flatten(f) => o.node("Flatten", name, operands, out, vec![attr("axis", A::I(f.axis))]),
            Op::Transpose(t) => {
                let attrs = if t.perm.is_empty() { vec![] } else { vec![attr("perm", A::Is(t.perm.clone()))] };
                o.node("Transpose", name, operands, out, attrs)
            }
            Op::Concat(c) => o.node("Concat", name, operands, out, vec![attr("axis", A::I(c.axis))]),
            Op::Gather(ga) => o.node("Gather", name, operands, out, vec![attr("axis", A::I(ga.axis))]),
            Op::GatherElements(ga) => o.node("GatherElements", name, operands, out, vec![attr("axis", A::I(ga.axis))]),
            Op::Slice(s) => {
                let mut ins = vec![operands[0].clone()];
                ins.push(o.ints(&format!("{name}.starts"), &s.starts));
                ins.push(o.ints(&format!("{name}.ends"), &s.ends));
                if !s.axes.is_empty() || !s.steps.is_empty() {
                    let axes: Vec<i64> =
                        if s.axes.is_empty() { (0..s.starts.len() as i64).collect() } else { s.axes.clone() };
                    ins.push(o.ints(&format!("{name}.axes"), &axes));
                }
                if !s.steps.is_empty() {
                    ins.push(o.ints(&format!("{name}.steps"), &s.steps));
                }
                o.node("Slice", name, ins, out, vec![])
            }
            Op::Trilu(t) => o.node("Trilu", name, operands, out, vec![attr("upper", A::I(t.upper as i64))]),
            // The one-to-one ops, from the importer's own table; anything else has no
            // export yet (fused kernels and attention come from the optimiser).
            op => match PLAIN.iter().find(|(_, mn)| *mn == op.mnemonic()) {
                Some((op_type, _)) => {
                    let attrs = op
                        .attrs()
                        .into_iter()
                        .filter_map(|(n, a)| if let Attr::Float(v) = a { Some(attr(n, A::F(v))) } else { None })
                        .collect();
                    o.node(op_type, name, operands, out, attrs)
                }
                None => return Err(unsupported("no ONNX export for this op yet")),
            },
        }
    }
    for (name, v) in g.outputs() {
        let src = o.names[v].clone();
        let out = reserved.remove(0);
        debug_assert_eq!(&out, name);
        o.node("Identity", &format!("{name}.output"), vec![src], out.clone(), vec![]);
        o.graph.output.push(value_info(&out, g.value_type(*v)));
    }
    let mut m = ModelProto::new();
    m.ir_version = 9;
    m.producer_name = "dlc".into();
    m.producer_version = env!("CARGO_PKG_VERSION").into();
    let mut opset = OperatorSetIdProto::new();
    opset.version = EXPORT_OPSET;
    m.opset_import.push(opset);
    m.graph = Some(o.graph).into();
    Ok(m)
}

/// The model's protobuf bytes.
pub fn export_bytes(g: &Graph) -> Result<Vec<u8>, ExportError> {
    Ok(export(g)?.write_to_bytes().expect("in-memory protobuf encoding"))
}

fn window_attrs(
    kernel: &[i64],
    strides: &[i64],
    pads: &[i64],
    dilations: &[i64],
    auto_pad: dlc_ir::ops::AutoPad,
) -> Vec<AttributeProto> {
    let mut v = Vec::new();
    for (n, x) in [("kernel_shape", kernel), ("strides", strides), ("pads", pads), ("dilations", dilations)] {
        if !x.is_empty() {
            v.push(attr(n, A::Is(x.to_vec())));
        }
    }
    v.push(attr("auto_pad", A::S(auto_pad.name().to_string())));
    v
}

fn reduce(o: &mut Out, t: &str, name: &str, operands: Vec<String>, out: String, axes: &[i64], keepdims: bool) {
    let mut ins = operands;
    if !axes.is_empty() {
        ins.push(o.ints(&format!("{name}.axes"), axes));
    }
    o.node(t, name, ins, out, vec![attr("keepdims", A::I(keepdims as i64))]);
}

fn arg_attrs(axis: i64, keepdims: bool, last: bool) -> Vec<AttributeProto> {
    vec![
        attr("axis", A::I(axis)),
        attr("keepdims", A::I(keepdims as i64)),
        attr("select_last_index", A::I(last as i64)),
    ]
}
