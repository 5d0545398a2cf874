//! Inference folding: BatchNormalization folded into the weights of the convolution
//! that feeds it, Identity removed.
use super::{named, Rule};
use crate::egraph::lang::{add_op, const_of, derived_consts, ops_of, used_only_by, EGraph};
use dlc_ir::ops::Activation;
use dlc_ir::{Op, TensorData};
use egg::Id;

/// The rules of this family.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule {
            name: "bn-into-conv",
            doc: "batchnorm(conv(x, W, b), s, t, mean, var) -> conv(x, W * k, (b - mean) * k + t), k = s / sqrt(var + eps)",
            looks_at: |op| matches!(op, Op::BatchNormalization(_)),
            derive: bn_into_conv,
        },
        Rule {
            name: "identity",
            doc: "identity(x) -> x",
            looks_at: |op| matches!(op, Op::Identity(_)),
            derive: |eg, id| {
                ops_of(eg, id)
                    .into_iter()
                    .filter(|(op, _)| matches!(op, Op::Identity(_)))
                    .map(|(_, ch)| (ch[0], String::new()))
                    .collect()
            },
        },
    ]
}

fn f32s(eg: &EGraph, id: Id) -> Option<Vec<f32>> {
    const_of(eg, id).and_then(|t| t.to_f32())
}

fn bn_into_conv(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        let Op::BatchNormalization(bn) = op else { continue };
        let params: Option<Vec<Vec<f32>>> = ch[1..].iter().map(|c| f32s(eg, *c)).collect();
        let Some(params) = params else { continue };
        let (scale, shift, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
        if !used_only_by(eg, ch[0], id, &ch[1..]) {
            continue;
        }
        for (inner, conv_ch) in ops_of(eg, ch[0]) {
            let Op::Conv(conv) = inner else { continue };
            if conv.act != Activation::None || conv_ch.len() > 3 {
                continue;
            }
            let operands: Vec<Id> = conv_ch[1..].iter().chain(&ch[1..]).copied().collect();
            let eps = bn.epsilon as f64;
            let folded = derived_consts(eg, "bn-into-conv", &operands, |eg| {
                let w = const_of(eg, conv_ch[1])?;
                let wv = w.to_f32()?;
                let m = scale.len();
                let bias = match conv_ch.get(2) {
                    Some(b) => f32s(eg, *b)?,
                    None => vec![0.0; m],
                };
                if m == 0
                    || wv.len() % m != 0
                    || [shift.len(), mean.len(), var.len(), bias.len()].iter().any(|&l| l != m)
                {
                    return None;
                }
                // In f64, rounded once to f32.
                let k: Vec<f64> = (0..m).map(|i| scale[i] as f64 / (var[i] as f64 + eps).sqrt()).collect();
                let per = wv.len() / m;
                let w2: Vec<f32> = wv.iter().enumerate().map(|(i, &x)| (x as f64 * k[i / per]) as f32).collect();
                let b2: Vec<f32> =
                    (0..m).map(|i| ((bias[i] as f64 - mean[i] as f64) * k[i] + shift[i] as f64) as f32).collect();
                let dims = w.ty().shape.as_fixed()?;
                Some(vec![TensorData::from_f32(&dims, &w2)?, TensorData::from_f32(&[m as u64], &b2)?])
            });
            let Some(folded) = folded else { continue };
            let (w2, b2) = (folded[0], folded[1]);
            if let Some(n) = add_op(eg, conv.clone().into(), vec![conv_ch[0], w2, b2]) {
                out.push((n, named(eg, ch[0], "")));
            }
        }
    }
    out
}
