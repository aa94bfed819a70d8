import VKFCore
import VKFModel

/// LoRA / rsLoRA / DoRA adapters attached to a model's projections (peft `get_peft_model`).
///
/// Creating one attaches an adapter to every targeted projection of `weights` (in layer order,
/// PEFT's order within a layer); `DecoderModel(weights:)` then trains them: the adapters' gradients
/// accumulate in one allocation (`zeroGradients` is one fill) and `trainableTensors` hands
/// them to the optimizer under their PEFT keys. Load the weights with `trainable: .none` for
/// LoRA-only training. For QLoRA call `QLoRA.quantize(weights)` first, so DoRA magnitudes
/// start from the quantised base as in PEFT.
public final class LoRAModel {
  /// The LoRA settings.
  public let config: LoRAConfig
  /// The model the adapters are attached to (a decoder's `DecoderWeights` or an encoder's
  /// `BertWeights`).
  public let weights: AdaptableWeights
  /// Every adapter with its module name (`model.layers.0.self_attn.q_proj`).
  public private(set) var adapters: [(module: String, adapter: LoRAAdapter)] = []
  /// The adapter tensors as PEFT stores them, by PEFT module name: one per adapter, except
  /// that a fused projection (Phi-3's `qkv_proj`, `gate_up_proj`) has one A shared by its
  /// parts' adapters and one B (and DoRA magnitude) whose row blocks are theirs — PEFT's
  /// LoRA on the fused linear, exactly.
  public private(set) var parameterGroups: [ParameterGroup] = []

  /// One PEFT module's adapter tensors and gradients.
  public struct ParameterGroup {
    public let module: String
    public let a, aGrad, b, bGrad: Tensor
    public let magnitude, magnitudeGrad: Tensor?
  }
  /// LoRA on a mixture-of-experts model's experts (`LoRAConfig.targetParameters`): one group
  /// per sparse layer and targeted parameter, and one adapter per sparse layer.
  public internal(set) var expertGroups: [ExpertGroup] = []
  public internal(set) var expertAdapters: [ExpertLoRA] = []
  let workspace: LoRAWorkspace
  private let gradientArena: Tensor

  /// Validates `config`, attaches adapters and initialises them as PEFT does: A from
  /// kaiming-uniform(a = √5) = U(−1/√in, 1/√in) drawn from SplitMix64(seed), B = 0, DoRA's
  /// magnitude = row norms of W.
  public init(weights: AdaptableWeights, config: LoRAConfig, seed: UInt64) throws {
    let decoder = weights as? DecoderWeights
    if let d = decoder, d.shape.moe != nil,
       let mlp = config.targetModules.first(where: { ["gate_proj", "up_proj", "down_proj", "gate_up_proj"].contains($0) }) {
      throw PEFTError("LoRA target module \"\(mlp)\" on a mixture-of-experts model: its experts are adapted "
        + "through target_parameters (mlp.experts.gate_up_proj, mlp.experts.down_proj), as PEFT does")
    }
    let expertPlan = try Self.expertPlan(weights: weights, config: config)
    let fusedNames = decoder != nil ? LoRAConfig.fusedModules.map(\.fused) : []
    try config.validate(modules: weights.loraModules + fusedNames)
    self.config = config
    self.weights = weights
    let be = weights.backend
    workspace = LoRAWorkspace(backend: be)
    let targets = Set(config.resolvedTargetModules(among: weights.loraModules))
    try config.checkTargets(fusedProjections: weights.fusedProjections)
    // The PEFT module a projection's adapter belongs to: its own, or its fused projection.
    var fusedModule: [String: (module: String, rowOffset: Int)] = [:]
    for f in weights.fusedModules { for part in f.parts { fusedModule[part.module] = (f.module, part.rowOffset) } }
    // Plan: which projections, their shapes and PEFT modules; validate before allocating.
    var plan: [(module: String, inF: Int, outF: Int, group: String, rowOffset: Int)] = []
    var problem: PEFTError?
    weights.updateProjections { module, linear in
      guard problem == nil, let short = module.split(separator: ".").last.map(String.init),
            targets.contains(short) else { return }
      if linear.adapter != nil {
        problem = PEFTError("\(module) already has an adapter; detach() the other LoRAModel first")
      } else if config.useDoRA && linear.weightGrad != nil {
        problem = PEFTError("DoRA needs a frozen base but \(module).weight is trainable; "
          + "load the weights with trainable: .none")
      }
      let fused = fusedModule[module]
      plan.append((module, linear.inFeatures, linear.outFeatures, fused?.module ?? module, fused?.rowOffset ?? 0))
    }
    if let problem { throw problem }
    guard !plan.isEmpty || !expertPlan.isEmpty else {
      throw PEFTError("no projection matches the LoRA target modules \(config.targetModules)")
    }
    // PEFT modules in first-seen order, with their input width and total output rows.
    var groupOrder: [String] = [], groupShape: [String: (inF: Int, outF: Int)] = [:]
    for p in plan {
      if let g = groupShape[p.group] {
        groupShape[p.group] = (g.inF, g.outF + p.outF)
      } else {
        groupOrder.append(p.group)
        groupShape[p.group] = (p.inF, p.outF)
      }
    }
    let r = config.r
    // Parameters and gradients: one allocation each, every view 64-float aligned like
    // DecoderWeights' gradients.
    func aligned(_ n: Int) -> Int { (n + 63) / 64 * 64 }
    var total = 0
    var offsets: [String: (a: Int, b: Int, m: Int)] = [:]
    for g in groupOrder {
      guard let s = groupShape[g] else { continue }
      let a = total; total += aligned(r * s.inF)
      let b = total; total += aligned(s.outF * r)
      let m = total; if config.useDoRA { total += aligned(s.outF) }
      offsets[g] = (a, b, m)
    }
    var expertOffsets: [(a: Int, b: Int)] = []
    for e in expertPlan {
      let a = total; total += aligned(e.aCount)
      let b = total; total += aligned(e.bCount)
      expertOffsets.append((a, b))
    }
    let params = try be.allocate([total])
    gradientArena = try be.allocate([total])
    try be.fill(params, value: 0)
    try be.fill(gradientArena, value: 0)
    var rng = SplitMix64(seed: seed)
    var groups: [ParameterGroup] = []
    for g in groupOrder {
      guard let s = groupShape[g], let o = offsets[g] else { continue }
      func views(_ t: Tensor) throws -> (Tensor, Tensor, Tensor?) {
        (try t.view(offset: o.a, shape: [r, s.inF]), try t.view(offset: o.b, shape: [s.outF, r]),
         config.useDoRA ? try t.view(offset: o.m, shape: [s.outF]) : nil)
      }
      let (a, b, m) = try views(params)
      let (ga, gb, gm) = try views(gradientArena)
      // Matches peft LoraLayer.reset_lora_parameters: kaiming_uniform_(A, a=√5) has bound
      // gain·√(3/fan_in) with gain = √(2/(1+5)), i.e. 1/√in; B = 0.
      let bound = 1 / Double(s.inF).squareRoot()
      let values = (0..<(r * s.inF)).map { _ in Float((2 * rng.nextUnitDouble() - 1) * bound) }
      try be.upload(values, to: a)
      groups.append(ParameterGroup(module: g, a: a, aGrad: ga, b: b, bGrad: gb, magnitude: m, magnitudeGrad: gm))
    }
    let groupIndex = Dictionary(uniqueKeysWithValues: groups.enumerated().map { ($1.module, $0) })
    var built: [(module: String, adapter: LoRAAdapter)] = []
    for p in plan {
      guard let i = groupIndex[p.group] else { continue }
      let g = groups[i]
      // The part's rows of the group's B (and magnitude); A is the group's own.
      func rows(_ t: Tensor) throws -> Tensor { try t.view(offset: p.rowOffset * r, shape: [p.outF, r]) }
      func entries(_ t: Tensor?) throws -> Tensor? { try t.map { try $0.view(offset: p.rowOffset, shape: [p.outF]) } }
      // One dropout index per PEFT module: a fused projection's parts see PEFT's one mask.
      let adapter = try LoRAAdapter(a: g.a, b: try rows(g.b), aGrad: g.aGrad, bGrad: try rows(g.bGrad),
                                    magnitude: try entries(g.magnitude), magnitudeGrad: try entries(g.magnitudeGrad),
                                    scaling: config.scaling, dropout: config.dropout, index: i,
                                    workspace: workspace)
      built.append((p.module, adapter))
    }
    adapters = built
    parameterGroups = groups
    for (e, o) in zip(expertPlan, expertOffsets) {
      let views = { (t: Tensor) throws -> (Tensor, Tensor) in
        (try t.view(offset: o.a, shape: e.aShape), try t.view(offset: o.b, shape: [e.bCount]))
      }
      let (a, b) = try views(params), (ga, gb) = try views(gradientArena)
      // PEFT's ParamWrapper initialises lora_A (r·E, in) as one nn.Linear: the same bound.
      let bound = 1 / Double(e.inF).squareRoot()
      try be.upload((0..<e.aCount).map { _ in Float((2 * rng.nextUnitDouble() - 1) * bound) }, to: a)
      expertGroups.append(ExpertGroup(plan: e, a: a, aGrad: ga, b: b, bGrad: gb))
    }
    if let decoder, !expertGroups.isEmpty { try attachExperts(to: decoder) }
    let byModule = Dictionary(uniqueKeysWithValues: built.map { ($0.module, $0.adapter) })
    try weights.updateProjections { module, linear in
      guard let adapter = byModule[module] else { return }
      if let m = adapter.magnitude { try be.upload(try Self.rowNorms(of: linear, on: be), to: m) }
      linear.adapter = adapter
    }
  }

  /// ‖W_j‖ per output row, summed in Double (peft `DoraLinearLayer.get_weight_norm` with B = 0
  /// computes the same norms in f32; this is within one rounding of them).
  // W: (out, in) dense or NF4 → (out)
  static func rowNorms(of linear: Linear, on be: Backend) throws -> [Float] {
    let (outF, inF) = (linear.outFeatures, linear.inFeatures)
    let w: [Float]
    switch linear.base {
    case .dense(let t): w = try be.floats(t)
    case .nf4(let q):
      let t = try be.allocate([outF, inF])
      try be.dequantizeNF4(q, into: t)
      w = try be.floats(t)
    case .int8(let q):
      let t = try be.allocate([outF, inF])
      try be.dequantizeInt8(q, into: t)
      w = try be.floats(t)
    }
    return (0..<outF).map { j in
      var s = 0.0
      for k in 0..<inF { let v = Double(w[j * inF + k]); s += v * v }
      return Float(s.squareRoot())
    }
  }

  // MARK: - Training interface

  /// Every adapter parameter with its gradient, named by PEFT key, in `parameterGroups` order.
  public var trainableTensors: [TrainableTensor] {
    parameterGroups.flatMap { g -> [TrainableTensor] in
      var out = [TrainableTensor(name: Self.peftKey(module: g.module, Self.loraAKey), value: g.a, gradient: g.aGrad),
                 TrainableTensor(name: Self.peftKey(module: g.module, Self.loraBKey), value: g.b, gradient: g.bGrad)]
      if let m = g.magnitude, let mg = g.magnitudeGrad {
        out.append(TrainableTensor(name: Self.peftKey(module: g.module, Self.magnitudeKey), value: m, gradient: mg))
      }
      return out
    } + expertGroups.flatMap { g in
      [TrainableTensor(name: g.peftKey(Self.loraAKey), value: g.a, gradient: g.aGrad),
       TrainableTensor(name: g.peftKey(Self.loraBKey), value: g.b, gradient: g.bGrad)]
    }
  }

  /// True when every adapter is on; setting it switches all of them (off: the base model,
  /// e.g. DPO's reference log-probs without a second copy).
  public var enabled: Bool {
    get { adapters.allSatisfy { $0.adapter.enabled } && expertAdapters.allSatisfy(\.enabled) }
    set {
      for (_, a) in adapters { a.enabled = newValue }
      for a in expertAdapters { a.enabled = newValue }
    }
  }

  /// Dropout applies only while training (PEFT's `model.train()` / `model.eval()`); set false
  /// for evaluation and generation. Default true.
  public var training: Bool {
    get { workspace.training }
    set { workspace.training = newValue }
  }

  /// Sets every adapter gradient to zero (one fill).
  public func zeroGradients() throws { try weights.backend.fill(gradientArena, value: 0) }

  /// Restarts the dropout masks from `seed`: each adapter's masks are then a pure function of
  /// (seed, adapter, number of backward passes since), so a run is reproducible and a
  /// checkpointed layer's recomputation reuses its forward's mask.
  public func setDropoutSeed(_ seed: UInt64) throws {
    try workspace.setDropoutSeed(seed)
    for (_, a) in adapters { a.dropoutStep = 0 }
  }

  /// Replaces every adapter tensor with values by PEFT key, in PEFT's layout (`lora_A.weight`
  /// [r, in], `lora_B.weight` [out, r], DoRA `lora_magnitude_vector` [out]; on experts
  /// lora_A [r·E, in] and lora_B [out, r·E], see `ExpertGroup`); all are required and no
  /// other key is accepted.
  public func load(_ tensors: [String: [Float]]) throws {
    let be = weights.backend
    var expected: [(key: String, tensor: Tensor)] = []
    for g in parameterGroups {
      expected.append((Self.peftKey(module: g.module, Self.loraAKey), g.a))
      expected.append((Self.peftKey(module: g.module, Self.loraBKey), g.b))
      if let m = g.magnitude { expected.append((Self.peftKey(module: g.module, Self.magnitudeKey), m)) }
    }
    var tensors = tensors
    for g in expertGroups {
      expected.append((g.peftKey(Self.loraAKey), g.a))
      expected.append((g.peftKey(Self.loraBKey), g.b))
      let bKey = g.peftKey(Self.loraBKey)
      if let v = tensors[bKey], v.count == g.plan.bCount { tensors[bKey] = g.plan.internalB(v) }
    }
    let known = Set(expected.map(\.key))
    if let extra = tensors.keys.sorted().first(where: { !known.contains($0) }) {
      throw PEFTError("unexpected adapter tensor \(extra): the adapter does not match this LoRA config "
        + "(r \(config.r), targets \(config.peftTargetModules(fusedProjections: weights.fusedProjections, among: weights.loraModules).joined(separator: ","))"
        + "\(config.useDoRA ? ", DoRA" : ""))")
    }
    for (key, t) in expected {
      guard let values = tensors[key] else {
        throw PEFTError("adapter tensor \(key) is missing (expected shape \(t.shape))")
      }
      guard values.count == t.count else {
        throw PEFTError("adapter tensor \(key) has \(values.count) values but shape \(t.shape) needs \(t.count)")
      }
    }
    for (key, t) in expected { try be.upload(tensors[key] ?? [], to: t) }
  }

  /// Removes this model's adapters from the projections and experts (the base model again).
  public func detach() {
    let mine = Set(adapters.map { ObjectIdentifier($0.adapter) })
    weights.updateProjections { _, linear in
      if let a = linear.adapter, mine.contains(ObjectIdentifier(a)) { linear.adapter = nil }
    }
    let experts = Set(expertAdapters.map(ObjectIdentifier.init))
    (weights as? DecoderWeights)?.updateExperts { _, ex in
      if let a = ex.adapter, experts.contains(ObjectIdentifier(a)) { ex.adapter = nil }
    }
  }

  // MARK: - PEFT keys

  /// "lora_A.weight".
  public static let loraAKey = "lora_A.weight"
  /// "lora_B.weight".
  public static let loraBKey = "lora_B.weight"
  /// DoRA's magnitude, as peft's `save_pretrained` writes it.
  public static let magnitudeKey = "lora_magnitude_vector"

  /// `base_model.model.<module>.<part>`, e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
  public static func peftKey(module: String, _ part: String) -> String {
    "base_model.model.\(module).\(part)"
  }
}
