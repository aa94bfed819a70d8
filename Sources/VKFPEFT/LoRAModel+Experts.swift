import VKFCore
import VKFModel

// LoRA on a mixture-of-experts model's experts, stored as PEFT 0.21's `ParamWrapper` stores it
// on transformers' stacked (E, out, in) expert parameters (`target_parameters`):
//   lora_A.weight (r·E, in): rows e·r ..< (e+1)·r are expert e's A_e (r, in);
//   lora_B.weight (out, r·E): columns j·E + e (j < r) are expert e's B_e (out, r) — interleaved;
//   delta_e = s·B_e·A_e in the checkpoint's (out, in) orientation.
// gate_up_proj's out is 2F, gate rows first, then up rows (one A_e shared). With both
// parameters targeted the wrappers nest in registration order: gate_up_proj's keys are
// `…mlp.experts.base_layer.lora_{A,B}.weight`, down_proj's `…mlp.experts.lora_{A,B}.weight`;
// one alone is `…mlp.experts.lora_…`. The module path is transformers 5's `mlp.experts` for
// Mixtral too (its checkpoint says `block_sparse_moe`). Verified against PEFT by
// tools/make_moe_lora_fixtures.py.
//
// In memory A keeps PEFT's layout (it is (E, r, in) row-major) and B is (parts, E, out, r),
// each expert's matrix contiguous as the grouped matmuls read it; `ExpertPlan` converts B.

extension LoRAModel {
  /// Where one sparse layer's adapter on one expert parameter lives and how it is shaped.
  public struct ExpertPlan: Sendable {
    /// The layer, the parameter (`gate_up_proj` / `down_proj`) and PEFT's module name
    /// (`model.layers.{i}.mlp.experts`, `.base_layer` appended for the inner wrapper).
    public let layer: Int, kind: String, module: String
    /// Experts E, rank r, input width, output rows per part, and parts (2: gate and up).
    public let experts: Int, rank: Int, inF: Int, outF: Int, parts: Int

    /// Elements of A and of B.
    public var aCount: Int { experts * rank * inF }
    public var bCount: Int { parts * outF * rank * experts }
    /// In-memory shape of A (E, r, in).
    public var aShape: [Int] { [experts, rank, inF] }
    /// PEFT's shapes: lora_A (r·E, in), lora_B (parts·out, r·E).
    public var peftAShape: [Int] { [rank * experts, inF] }
    public var peftBShape: [Int] { [parts * outF, rank * experts] }

    /// `base_model.model.<module>.<part>`.
    public func peftKey(_ part: String) -> String { LoRAModel.peftKey(module: module, part) }

    /// B from PEFT's (parts·out, r·E) layout into (parts, E, out, r).
    public func internalB(_ peft: [Float]) -> [Float] {
      var out = [Float](repeating: 0, count: bCount)
      for h in 0..<parts { for e in 0..<experts { for o in 0..<outF { for j in 0..<rank {
        out[((h * experts + e) * outF + o) * rank + j] = peft[(h * outF + o) * (rank * experts) + j * experts + e]
      } } } }
      return out
    }

    /// B from (parts, E, out, r) into PEFT's (parts·out, r·E) layout.
    public func peftB(_ values: [Float]) -> [Float] {
      var out = [Float](repeating: 0, count: bCount)
      for h in 0..<parts { for e in 0..<experts { for o in 0..<outF { for j in 0..<rank {
        out[(h * outF + o) * (rank * experts) + j * experts + e] = values[((h * experts + e) * outF + o) * rank + j]
      } } } }
      return out
    }
  }

  /// One expert adapter's tensors (in-memory layouts, see `ExpertPlan`) and gradients.
  public struct ExpertGroup {
    public let plan: ExpertPlan
    public let a, aGrad, b, bGrad: Tensor
    public func peftKey(_ part: String) -> String { plan.peftKey(part) }
    /// Part h's B (E, out, r) of `t` (b or bGrad).
    func part(_ h: Int, of t: Tensor) throws -> Tensor {
      let p = plan
      return try t.view(offset: h * p.experts * p.outF * p.rank, shape: [p.experts, p.outF, p.rank])
    }
  }

  /// The expert adapters `config.targetParameters` asks for on `weights`, layer by layer
  /// (refused on a model without experts).
  static func expertPlan(weights: AdaptableWeights, config: LoRAConfig) throws -> [ExpertPlan] {
    let kinds = config.resolvedTargetParameters
    guard !kinds.isEmpty else { return [] }
    guard let d = weights as? DecoderWeights, let m = d.shape.moe else {
      throw PEFTError("LoRA target_parameters \(config.targetParameters) name a mixture-of-experts model's experts; "
        + "this model has none")
    }
    var out: [ExpertPlan] = []
    for i in 0..<d.shape.layers where d.shape.isSparse(layer: i) {
      let base = ParameterNames.layerPrefix(i) + "mlp.experts"
      for kind in kinds {
        let inner = kind == "gate_up_proj" && kinds.count > 1
        let gateUp = kind == "gate_up_proj"
        out.append(ExpertPlan(layer: i, kind: kind, module: base + (inner ? ".base_layer" : ""), experts: m.experts,
                              rank: config.r, inF: gateUp ? d.shape.hidden : m.intermediate,
                              outF: gateUp ? m.intermediate : d.shape.hidden, parts: gateUp ? 2 : 1))
      }
    }
    return out
  }

  /// Attaches one `ExpertLoRA` per sparse layer over `expertGroups`.
  func attachExperts(to weights: DecoderWeights) throws {
    var made: [Int: ExpertLoRA] = [:]
    for layer in Set(expertGroups.map(\.plan.layer)).sorted() {
      let groups = expertGroups.filter { $0.plan.layer == layer }
      func pair(_ kind: String) throws -> ExpertLoRA.Pair? {
        guard let g = groups.first(where: { $0.plan.kind == kind }) else { return nil }
        let up = g.plan.parts > 1
        return ExpertLoRA.Pair(a: g.a, aGrad: g.aGrad, b: try g.part(0, of: g.b), bGrad: try g.part(0, of: g.bGrad),
                               bUp: up ? try g.part(1, of: g.b) : nil, bUpGrad: up ? try g.part(1, of: g.bGrad) : nil)
      }
      made[layer] = ExpertLoRA(layer: layer, gateUp: try pair("gate_up_proj"), down: try pair("down_proj"),
                               scaling: config.scaling, workspace: workspace)
    }
    var problem: PEFTError?
    weights.updateExperts { i, ex in
      guard let a = made[i] else { return }
      if ex.adapter != nil { problem = PEFTError("layer \(i)'s experts already have an adapter; detach() the other LoRAModel first") }
      ex.adapter = a
    }
    if let problem { throw problem }
    expertAdapters = made.keys.sorted().compactMap { made[$0] }
  }

  /// Every adapter tensor as PEFT saves it: key, shape and values (expert B re-laid out).
  public func peftTensors() throws -> [(key: String, shape: [Int], values: [Float])] {
    let be = weights.backend
    var out: [(key: String, shape: [Int], values: [Float])] = []
    let experts = Dictionary(uniqueKeysWithValues: expertGroups.flatMap { g in
      [(g.peftKey(Self.loraAKey), (g.plan.peftAShape, false, g.plan)), (g.peftKey(Self.loraBKey), (g.plan.peftBShape, true, g.plan))]
    })
    for t in trainableTensors {
      let values = try be.floats(t.value)
      if let (shape, isB, plan) = experts[t.name] {
        out.append((t.name, shape, isB ? plan.peftB(values) : values))
      } else {
        out.append((t.name, t.value.shape, values))
      }
    }
    return out
  }

  /// Every adapter tensor's shape in PEFT's file, by key.
  public var peftShapes: [String: [Int]] {
    var out = Dictionary(uniqueKeysWithValues: trainableTensors.map { ($0.name, $0.value.shape) })
    for g in expertGroups {
      out[g.peftKey(Self.loraAKey)] = g.plan.peftAShape
      out[g.peftKey(Self.loraBKey)] = g.plan.peftBShape
    }
    return out
  }

  /// A trainable tensor's values (in memory) in PEFT's layout, with PEFT's shape: what the
  /// adapter file holds under `name` (gradients compare the same way).
  public func peftLayout(_ name: String, _ values: [Float]) -> (shape: [Int], values: [Float])? {
    for g in expertGroups {
      if name == g.peftKey(Self.loraAKey) { return (g.plan.peftAShape, values) }
      if name == g.peftKey(Self.loraBKey) { return (g.plan.peftBShape, g.plan.peftB(values)) }
    }
    return nil
  }
}
