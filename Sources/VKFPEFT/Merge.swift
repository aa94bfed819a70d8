import VKFCore
import VKFModel

/// Folds adapters into the base weights (peft `merge_and_unload`), after which the model is a
/// plain Llama again that `HFModelWriter` can write.
public enum Merge {
  /// W ← W + s·B·A in every adapted projection (DoRA: W ← (m / ‖W + s·B·A‖_row) ⊙ (W + s·B·A),
  /// row norms per output feature, as peft's `DoraLinearLayer` merge), then detaches the
  /// adapters.
  ///
  /// Every base must be dense: an NF4 (QLoRA) base is refused before anything changes —
  /// merging into 4-bit weights would round the update away. Load the base in f32, load the
  /// adapter into it (`PEFTAdapterFiles.load`) and merge that, as peft dequantises.
  /// Disabled adapters are merged too (peft merges regardless of `disable_adapter`).
  public static func merge(_ lora: LoRAModel) throws {
    let be = lora.weights.backend
    var bases: [String: Tensor] = [:]
    var nf4: [String] = [], int8: [String] = []
    lora.weights.updateProjections { module, linear in
      if let w = linear.denseWeight { bases[module] = w } else if case .int8 = linear.base { int8.append(module) } else { nf4.append(module) }
    }
    // Validate everything first so a refused merge leaves the model untouched.
    for (module, _) in lora.adapters {
      if int8.contains(module) {
        throw PEFTError("\(module) is an int8 (compressed-tensors) weight; merging into 8-bit weights would lose the "
          + "update: merge into the f32 model it was quantised from, then quantize the merged model")
      }
      if nf4.contains(module) {
        throw PEFTError("\(module) has an NF4 (QLoRA) base; merging into 4-bit weights would lose the update: "
          + "load the base model in f32, load the adapter into it (PEFTAdapterFiles.load), then merge")
      }
      guard let w = bases[module] else {
        throw PEFTError("\(module): no dense projection of that name in the model to merge into")
      }
      guard w.dtype == .f32 else {
        throw PEFTError("\(module) has a \(w.dtype) base (mixed-precision training keeps frozen weights 16-bit); "
          + "merge into the f32 base: load the model without --bf16/--fp16, load the adapter into it, then merge")
      }
    }
    let experts = try expertMerges(lora)
    for (module, adapter) in lora.adapters {
      guard let w = bases[module] else { continue }
      // W: (out, in) += s · B (out, r) · A (r, in)
      try be.matmul(adapter.b, adapter.a, into: w, transposeA: false, transposeB: false,
                    alpha: adapter.scaling, beta: 1)
      if let m = adapter.magnitude {
        let factors = try doraFactors(merged: w, magnitude: m, on: be)
        try be.scaleRows(w, weights: try be.tensor(factors, shape: [factors.count]), into: w)
      }
    }
    for (w, b, a, scaling) in experts {
      // Every expert at once: W_e (out, in) += s · B_e (out, r) · A_e (r, in), a batched product.
      try be.matmul(b, a, into: w, transposeA: false, transposeB: false, alpha: scaling, beta: 1)
    }
    try be.synchronize()
    lora.detach()
  }

  /// The expert stacks an expert adapter merges into, with its B parts, A and scaling —
  /// checked first: every stack dense f32 (QLoRA's NF4 or 16-bit stacks refused as above).
  static func expertMerges(_ lora: LoRAModel) throws -> [(Tensor, Tensor, Tensor, Float)] {
    guard let weights = lora.weights as? DecoderWeights else { return [] }
    var out: [(Tensor, Tensor, Tensor, Float)] = []
    for adapter in lora.expertAdapters {
      guard let ex = weights.layers[adapter.layer].experts else { continue }
      func dense(_ w: LinearWeight, _ kind: String) throws -> Tensor {
        let what = "layer \(adapter.layer)'s \(kind) experts"
        guard case .dense(let t) = w else {
          throw PEFTError("\(what) are NF4 (QLoRA); merging into 4-bit weights would lose the update: load the base "
            + "model in f32, load the adapter into it (PEFTAdapterFiles.load), then merge")
        }
        guard t.dtype == .f32 else {
          throw PEFTError("\(what) are stored \(t.dtype); merge into the f32 base: load the model without --bf16/--fp16")
        }
        return t
      }
      if let p = adapter.gateUp, let bUp = p.bUp {
        out.append((try dense(ex.gate, "gate"), p.b, p.a, adapter.scaling))
        out.append((try dense(ex.up, "up"), bUp, p.a, adapter.scaling))
      }
      if let p = adapter.down { out.append((try dense(ex.down, "down"), p.b, p.a, adapter.scaling)) }
    }
    return out
  }

  /// m_j / ‖W'_j‖ per output row j of W' = W + s·B·A (norms summed in Double).
  // merged: (out, in)  magnitude: (out) → (out)
  static func doraFactors(merged: Tensor, magnitude: Tensor, on be: Backend) throws -> [Float] {
    let (outF, inF) = (merged.shape[0], merged.lastDim)
    let w = try be.floats(merged), m = try be.floats(magnitude)
    return (0..<outF).map { j in
      var s = 0.0
      for k in 0..<inF { let v = Double(w[j * inF + k]); s += v * v }
      // A zero row stays zero whatever the factor; avoid 0/0.
      return s > 0 ? Float(Double(m[j]) / s.squareRoot()) : 0
    }
  }
}
