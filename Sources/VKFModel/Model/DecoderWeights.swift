import VKFCore

/// A decoder's weights that cannot be used: the file and tensor concerned and what is
/// wrong.
public struct ModelWeightsError: Error, CustomStringConvertible, Equatable {
  /// The Hugging Face tensor name (or "" when no single tensor is concerned).
  public var tensor: String
  /// What is wrong and what to check.
  public var detail: String
  /// The weights file (or index) the tensor comes from; "" for weights in memory.
  public var file = ""

  public init(_ tensor: String, _ detail: String) { self.tensor = tensor; self.detail = detail }

  public var description: String {
    let what = tensor.isEmpty ? detail : "\(tensor): \(detail)"
    return file.isEmpty ? what : "\(file): \(what)"
  }
}

/// One decoder layer's parameters (and gradients, nil where frozen).
public struct DecoderLayerWeights {
  /// RMSNorm weight before attention (C).
  public var inputNorm: Tensor
  /// Its accumulated gradient.
  public var inputNormGrad: Tensor?
  /// Attention projections: q (NH·HS, C), k and v (KVH·HS, C), o (C, NH·HS).
  public var q, k, v, o: Linear
  /// Per-head RMSNorm weights of queries and keys (HS), Qwen3's; nil without them.
  public var qNorm: Tensor? = nil, kNorm: Tensor? = nil
  /// Their accumulated gradients.
  public var qNormGrad: Tensor? = nil, kNormGrad: Tensor? = nil
  /// Sandwich norms (Gemma 2/3): RMSNorm weights (C) of the attention output and of the MLP
  /// output, before their residual adds; nil otherwise.
  public var attnOutNorm: Tensor? = nil, mlpOutNorm: Tensor? = nil
  /// Their accumulated gradients.
  public var attnOutNormGrad: Tensor? = nil, mlpOutNormGrad: Tensor? = nil
  /// RMSNorm weight before the MLP (C): `post_attention_layernorm`, or with sandwich norms
  /// `pre_feedforward_layernorm`.
  public var postNorm: Tensor
  /// Its accumulated gradient.
  public var postNormGrad: Tensor?
  /// Dense MLP projections: gate and up (F, C), down (C, F); nil in a sparse layer.
  public var gate, up, down: Linear?
  /// A sparse layer's router and experts; nil in a dense layer.
  public var experts: ExpertWeights? = nil

  /// True when any parameter of this layer is trained.
  public var isTrained: Bool {
    inputNormGrad != nil || postNormGrad != nil || qNormGrad != nil || kNormGrad != nil
      || attnOutNormGrad != nil || mlpOutNormGrad != nil
      || [q, k, v, o].contains { $0.isTrained } || [gate, up, down].contains { $0?.isTrained == true }
      || experts?.isTrained == true
  }
}

/// A sparse layer's mixture of experts: the router and every expert's gated MLP, each
/// projection kind stacked over the experts in one tensor (expert e's weight is row block e,
/// the view `parameters` holds under its Hugging Face name), or for QLoRA one NF4 weight
/// (E·F, C) / (E·C, F) quantised as a whole.
public struct ExpertWeights {
  /// Router (E, C): logits = x·routerᵀ.
  public var router: Linear
  /// Gate and up (E, F, C), down (E, C, F): dense (f32 or 16-bit) or NF4.
  public var gate, up, down: LinearWeight
  /// Their accumulated gradients (nil where frozen), stacked the same way.
  public var gateGrad, upGrad, downGrad: Tensor?
  /// What adds to the expert products (LoRA on the experts), or nil.
  public var adapter: ExpertAdapter? = nil
  /// Qwen2-MoE's shared expert, or nil.
  public var shared: SharedExpertWeights? = nil

  /// True when the router, an expert, the shared expert or an adapter on them is trained.
  public var isTrained: Bool {
    router.isTrained || gateGrad != nil || upGrad != nil || downGrad != nil || adapter != nil
      || shared?.isTrained == true
  }
}

/// A sparse block's shared expert (Qwen2-MoE): a gated MLP every token runs, its output scaled
/// by σ(x·scalarᵀ) and added to the routed experts' sum.
public struct SharedExpertWeights {
  /// gate and up (Fs, C), down (C, Fs): `shared_expert.{gate,up,down}_proj`.
  public var gate, up, down: Linear
  /// `shared_expert_gate` (1, C).
  public var scalar: Linear

  public var isTrained: Bool { [gate, up, down, scalar].contains { $0.isTrained } }
}

/// Something that adds its own terms to a sparse layer's grouped expert products (LoRA on the
/// experts), called by the layer right after each base product with the same expert rows;
/// in the backward after the base's input gradient, adding to it. Rows are grouped by expert
/// as `offsets` says (`Backend.moeDispatch`); R rows, C hidden, F expert width.
public protocol ExpertAdapter: AnyObject {
  /// gate and up (R, F) += the adapter's terms for the rows x (R, C).
  func gateUpForward(_ be: Backend, x: Tensor, offsets: Tensor, gate: Tensor, up: Tensor) throws
  /// y (R, C) += the adapter's term for the rows x (R, F) (the gated activations).
  func downForward(_ be: Backend, x: Tensor, offsets: Tensor, into y: Tensor) throws
  /// From dy (R, C) of down and its input x (R, F): the adapter's gradients, dx += its term.
  func downBackward(_ be: Backend, dy: Tensor, x: Tensor, offsets: Tensor, dx: Tensor) throws
  /// From dGate, dUp (R, F) and their input x (R, C): the adapter's gradients, dx += its term.
  func gateUpBackward(_ be: Backend, dGate: Tensor, dUp: Tensor, x: Tensor, offsets: Tensor, dx: Tensor) throws
}

/// The parameters of a decoder model on one backend (f32), with gradient buffers for
/// the trained subset carved from one allocation (so `zeroGradients` is one fill).
public final class DecoderWeights {
  /// The architecture these weights were checked against.
  public let shape: TransformerShape
  /// The backend that owns every tensor here.
  public let backend: Backend
  /// Token embedding (V, C).
  public private(set) var embedding: Tensor
  /// Its accumulated gradient (from the lookup and, when tied, the LM head).
  public private(set) var embeddingGrad: Tensor?
  /// The decoder layers.
  public private(set) var layers: [DecoderLayerWeights]
  /// Final RMSNorm weight (C).
  public private(set) var finalNorm: Tensor
  /// Its accumulated gradient.
  public private(set) var finalNormGrad: Tensor?
  /// LM head (V, C); when tied it views the embedding and its gradient.
  public private(set) var lmHead: Linear
  /// Every parameter by Hugging Face name (the tied LM head appears once, as the embedding).
  public private(set) var parameters: [String: Tensor] = [:]
  /// Every gradient by Hugging Face name (trained parameters only).
  public private(set) var gradients: [String: Tensor] = [:]
  /// Storage of the frozen matrices (f32 unless loaded with a 16-bit `frozenStorage`).
  public let frozenStorage: DType
  /// The one allocation all gradients view (nil when nothing is trained).
  private let gradientArena: Tensor?

  /// Makes a frozen projection's base from its f32 values on the host (QLoRA: NF4), so the
  /// dense tensor never reaches the device: (module name, values, rows, cols) → base.
  public typealias ProjectionBaseMaker = (_ module: String, _ values: [Float], _ rows: Int, _ cols: Int) throws -> LinearWeight

  /// Loads every parameter by Hugging Face name from `source`, checking names and shapes
  /// against `shape`, and allocates gradients for `trainable`. With `projectionBase`, each
  /// frozen projection weight is turned into its base on the host, one tensor at a time, and
  /// only that base is uploaded (QLoRA without the f32 model on the device). `frozenStorage`
  /// f16 / bf16 keeps every frozen matrix (projections, embedding, LM head) 16-bit on the
  /// device — mixed precision's half-size weights, read by matmul and embedding with f32
  /// accumulation; trained parameters, norms and biases stay f32. `cachedBases` (HF weight name
  /// → base, e.g. NF4 from a quantisation cache) are taken as they are, the source's values for
  /// those names never read.
  public convenience init(from source: WeightSource, shape: TransformerShape, backend: Backend,
                          trainable: TrainableParameters = .none, frozenStorage: DType = .f32,
                          projectionBase: ProjectionBaseMaker? = nil, cachedBases: [String: LinearWeight] = [:]) throws {
    do {
      try self.init(loading: source, shape: shape, backend: backend, trainable: trainable,
                    frozenStorage: frozenStorage, projectionBase: projectionBase, cachedBases: cachedBases)
    } catch var error as ModelWeightsError {
      if error.file.isEmpty { error.file = source.weightsPath }  // name the file in the message
      throw error
    }
  }

  private init(loading source: WeightSource, shape: TransformerShape, backend: Backend,
               trainable: TrainableParameters, frozenStorage: DType,
               projectionBase: ProjectionBaseMaker?, cachedBases: [String: LinearWeight]) throws {
    guard frozenStorage.isFloat else {
      throw ModelWeightsError("", "frozen weights are stored f32, f16 or bf16, not \(frozenStorage)")
    }
    try shape.validate()
    self.shape = shape
    self.frozenStorage = frozenStorage
    self.backend = backend
    let expected = shape.parameterShapes
    let available = Set(source.tensorNames)
    if case .named(let names) = trainable {
      let known = Set(expected.map(\.name))
      if let unknown = names.subtracting(known).sorted().first {
        throw ModelWeightsError(unknown, "is not a parameter of this model; trainable names are "
          + "Hugging Face names such as \(ParameterNames.embedding)")
      }
    }
    var params: [String: Tensor] = [:]
    var bases: [String: LinearWeight] = [:]
    let projectionWeights = Set((0..<shape.layers).flatMap { i in
      Self.projectionSuffixes.map { ParameterNames.layerPrefix(i) + $0 + ".weight" }
    } + (0..<shape.layers).flatMap { i -> [String] in
      // QLoRA quantises a shared expert's projections like any MLP's (its scalar gate stays f32).
      guard let m = shape.moe, m.sharedIntermediate > 0, shape.isSparse(layer: i) else { return [] }
      let s = m.sharedNames(i)
      return [s.gate, s.up, s.down]
    })
    // Fused tensors (Phi-3's qkv_proj, gate_up_proj) by HF name → their parts' names and rows.
    var fusedParts: [String: [(name: String, rows: Int)]] = [:]
    for f in shape.fusedModules { fusedParts[f.module + ".weight"] = f.parts.map { ($0.module + ".weight", $0.rows) } }
    fusedPartNames = fusedParts.mapValues { $0.map(\.name) }
    // Expert weights land in per-layer stacks (E, F, C) / (E, C, F): name → (stack, expert).
    let stacks = try Self.expertStacks(shape, backend, trainable: trainable, frozenStorage: frozenStorage,
                                       quantized: projectionBase != nil)
    for (name, want) in expected {
      guard available.contains(name) else {
        throw ModelWeightsError(name, "missing from the weights (expected shape \(want)); "
          + "check that the checkpoint matches the config (tie_word_embeddings, attention bias)")
      }
      let got = try source.shape(of: name)
      guard got == want else {
        throw ModelWeightsError(name, "has shape \(got) but the config implies \(want)")
      }
      if projectionWeights.contains(name), !trainable.contains(name), cachedBases[name] == nil,
         let stored = source as? QuantizedBaseSource, let base = try stored.linearBase(name, backend: backend) {
        bases[name] = base  // an int8 checkpoint's projection, uploaded as it is stored
        continue
      }
      if let base = cachedBases[name], projectionWeights.contains(name), !trainable.contains(name) {
        guard base.outFeatures == want[0], base.inFeatures == want[1] else {
          throw ModelWeightsError(name, "cached base is \(base.outFeatures)×\(base.inFeatures), the config implies \(want)")
        }
        bases[name] = base
        continue
      }
      let values = try source.floats(name)
      guard values.count == want.reduce(1, *) else {
        throw ModelWeightsError(name, "has \(values.count) values for shape \(want)")
      }
      if let i = values.firstIndex(where: { !$0.isFinite }) {
        throw ModelWeightsError(name, "holds \(values[i]) at element \(i) of \(values.count); the checkpoint "
          + "is corrupt or was saved from a diverged run, and training on it gives a NaN loss")
      }
      if let projectionBase, projectionWeights.contains(name), !trainable.contains(name), want.count == 2 {
        bases[name] = try projectionBase(String(name.dropLast(".weight".count)), values, want[0], want[1])
        continue
      }
      if let projectionBase, let parts = fusedParts[name], !trainable.contains(name) {
        // QLoRA over a fused tensor: each part quantised on its own (its rows start on a
        // 64-value block boundary, hidden % 64 == 0, so the blocks are the fused tensor's).
        var row = 0
        for part in parts {
          let slice = Array(values[(row * want[1])..<((row + part.rows) * want[1])])
          bases[part.name] = try projectionBase(String(part.name.dropLast(".weight".count)), slice, part.rows, want[1])
          row += part.rows
        }
        continue
      }
      if let (stack, e) = stacks.slot[name] {
        guard let dense = stack.tensor else {
          // QLoRA: collected on the host, quantised as one weight once the last expert is in.
          try stack.collect(values, expert: e, quantizer: projectionBase)
          continue
        }
        let part = try dense.view(offset: e * stack.perExpert, shape: want)
        if part.dtype == .f32 {
          try backend.upload(values, to: part)
        } else {
          try backend.upload(try Self.bits16(values, part.dtype, name: name), to: part)
        }
        params[name] = part
        continue
      }
      if frozenStorage != .f32, want.count == 2, !trainable.contains(name) {
        params[name] = try Self.upload16(values, shape: want, frozenStorage, name: name, on: backend)
        continue
      }
      params[name] = try backend.tensor(values, shape: want)
    }
    // Gradients: one allocation, each view 64-float aligned (256 bytes, Vulkan's usual
    // minStorageBufferOffsetAlignment, so no view straddles a misaligned binding).
    let trained = expected.filter { trainable.contains($0.name) }
    var offsets: [String: Int] = [:], total = 0
    for (name, s) in trained where stacks.slot[name] == nil { offsets[name] = total; total += Self.aligned(s.reduce(1, *)) }
    // Each stack's gradients form one (E, ·, ·) tensor: expert e's at e·(its size), the stack
    // aligned (reserved whole when any of its experts trains).
    var stackGradOffsets: [ObjectIdentifier: Int] = [:]
    for stack in stacks.all where stack.names.contains(where: trainable.contains) {
      stackGradOffsets[ObjectIdentifier(stack)] = total
      for (e, name) in stack.names.enumerated() where trainable.contains(name) { offsets[name] = total + e * stack.perExpert }
      total += Self.aligned(stack.names.count * stack.perExpert)
    }
    gradientArena = total > 0 ? try backend.allocate([total]) : nil
    var grads: [String: Tensor] = [:]
    if let arena = gradientArena {
      for (name, s) in trained { grads[name] = try arena.view(offset: offsets[name] ?? 0, shape: s) }
      for stack in stacks.all {
        guard let at = stackGradOffsets[ObjectIdentifier(stack)] else { continue }
        stack.gradient = try arena.view(offset: at, shape: stack.shape)
      }
    }
    // The parts of fused tensors: row views of the parameter and of its gradient.
    var partParams: [String: Tensor] = [:], partGrads: [String: Tensor] = [:]
    for (fused, parts) in fusedParts {
      var row = 0
      for part in parts {
        let cols = shape.hidden
        if let t = params[fused] { partParams[part.name] = try t.view(offset: row * cols, shape: [part.rows, cols]) }
        if let g = grads[fused] { partGrads[part.name] = try g.view(offset: row * cols, shape: [part.rows, cols]) }
        row += part.rows
      }
    }
    func param(_ n: String) throws -> Tensor {
      guard let t = params[n] ?? partParams[n] else { throw ModelWeightsError(n, "not loaded") }
      return t
    }
    func linear(_ p: String) throws -> Linear {
      if let base = bases[p + ".weight"] {
        return Linear(base: base, bias: params[p + ".bias"], biasGrad: grads[p + ".bias"])
      }
      return Linear(weight: try param(p + ".weight"), bias: params[p + ".bias"],
                    weightGrad: grads[p + ".weight"] ?? partGrads[p + ".weight"], biasGrad: grads[p + ".bias"])
    }
    func sharedExpert(_ i: Int) throws -> SharedExpertWeights? {
      guard let m = shape.moe, m.sharedIntermediate > 0, shape.isSparse(layer: i) else { return nil }
      let s = m.sharedNames(i)
      func module(_ name: String) -> String { String(name.dropLast(".weight".count)) }
      return SharedExpertWeights(gate: try linear(module(s.gate)), up: try linear(module(s.up)),
                                 down: try linear(module(s.down)), scalar: try linear(module(s.scalar)))
    }
    embedding = try param(ParameterNames.embedding)
    embeddingGrad = grads[ParameterNames.embedding]
    layers = try (0..<shape.layers).map { i in
      let p = ParameterNames.layerPrefix(i)
      return DecoderLayerWeights(
        inputNorm: try param(p + "input_layernorm.weight"),
        inputNormGrad: grads[p + "input_layernorm.weight"],
        q: try linear(p + "self_attn.q_proj"), k: try linear(p + "self_attn.k_proj"),
        v: try linear(p + "self_attn.v_proj"), o: try linear(p + "self_attn.o_proj"),
        qNorm: shape.qkNorm ? try param(p + "self_attn.q_norm.weight") : nil,
        kNorm: shape.qkNorm ? try param(p + "self_attn.k_norm.weight") : nil,
        qNormGrad: grads[p + "self_attn.q_norm.weight"], kNormGrad: grads[p + "self_attn.k_norm.weight"],
        attnOutNorm: shape.sandwichNorms ? try param(p + "post_attention_layernorm.weight") : nil,
        mlpOutNorm: shape.sandwichNorms ? try param(p + "post_feedforward_layernorm.weight") : nil,
        attnOutNormGrad: shape.sandwichNorms ? grads[p + "post_attention_layernorm.weight"] : nil,
        mlpOutNormGrad: grads[p + "post_feedforward_layernorm.weight"],
        postNorm: try param(p + (shape.sandwichNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight")),
        postNormGrad: grads[p + (shape.sandwichNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight")],
        gate: shape.isSparse(layer: i) ? nil : try linear(p + "mlp.gate_proj"),
        up: shape.isSparse(layer: i) ? nil : try linear(p + "mlp.up_proj"),
        down: shape.isSparse(layer: i) ? nil : try linear(p + "mlp.down_proj"),
        experts: try stacks.weights(layer: i, router: shape.isSparse(layer: i) ? try shape.moe.map { try linear($0.blockPrefix(i) + ".gate") } : nil,
                                    shared: try sharedExpert(i)))
    }
    finalNorm = try param(ParameterNames.finalNorm)
    finalNormGrad = grads[ParameterNames.finalNorm]
    lmHead = shape.tiedEmbeddings
      ? Linear(weight: embedding, weightGrad: embeddingGrad)
      : try linear("lm_head")
    parameters = params
    gradients = grads
    try zeroGradients()
  }

  /// The projections of every layer by Hugging Face module name
  /// (`model.layers.{i}.self_attn.q_proj` …), in layer order: where adapters attach. A sparse
  /// layer has the four attention projections only (its router and experts are not visited).
  public var projectionNames: [String] {
    (0..<shape.layers).flatMap { i in
      (Self.attentionKeys.map(\.prefix) + (shape.isSparse(layer: i) ? [] : Self.mlpKeys.map(\.prefix)))
        .map { ParameterNames.layerPrefix(i) + $0 }
    }
  }

  /// Module-name suffix and key path of each attention projection, in PEFT's order.
  nonisolated(unsafe) static let attentionKeys: [(prefix: String, path: WritableKeyPath<DecoderLayerWeights, Linear>)] = [
    ("self_attn.q_proj", \.q), ("self_attn.k_proj", \.k), ("self_attn.v_proj", \.v), ("self_attn.o_proj", \.o),
  ]
  /// The dense MLP's projections (absent in sparse layers), after the attention's.
  nonisolated(unsafe) static let mlpKeys: [(prefix: String, path: WritableKeyPath<DecoderLayerWeights, Linear?>)] = [
    ("mlp.gate_proj", \.gate), ("mlp.up_proj", \.up), ("mlp.down_proj", \.down),
  ]

  /// Module-name suffixes of every dense layer's projections, in PEFT's order.
  static var projectionSuffixes: [String] { attentionKeys.map(\.prefix) + mlpKeys.map(\.prefix) }

  /// Calls `body` with every projection and its Hugging Face module name
  /// (`model.layers.{i}.self_attn.q_proj`, …) and stores what it changes: how adapters are
  /// attached and how QLoRA swaps a dense base for NF4. The LM head, routers and experts are
  /// not visited.
  public func updateProjections(_ body: (String, inout Linear) throws -> Void) rethrows {
    for i in layers.indices {
      let p = ParameterNames.layerPrefix(i)
      for (suffix, path) in Self.attentionKeys { try body(p + suffix, &layers[i][keyPath: path]) }
      for (suffix, path) in Self.mlpKeys {
        guard var linear = layers[i][keyPath: path] else { continue }
        try body(p + suffix, &linear)
        layers[i][keyPath: path] = linear
      }
    }
  }

  /// Calls `body` with every sparse layer's index and experts and stores what it changes (how
  /// adapters attach to the experts).
  public func updateExperts(_ body: (Int, inout ExpertWeights) throws -> Void) rethrows {
    for i in layers.indices {
      guard var ex = layers[i].experts else { continue }
      try body(i, &ex)
      layers[i].experts = ex
    }
  }

  /// Drops a dense parameter from `parameters` (after QLoRA replaced it with NF4), so its
  /// memory is released once no projection refers to it. A part of a fused tensor (Phi-3's
  /// q_proj in qkv_proj) releases the fused tensor with its last part.
  public func releaseParameter(_ name: String) {
    parameters[name] = nil
    for (fused, parts) in fusedPartNames where parts.contains(name) {
      releasedParts.insert(name)
      if parts.allSatisfy(releasedParts.contains) { parameters[fused] = nil }
    }
  }

  /// Fused tensors by HF name → their parts' names (empty without fused projections).
  private let fusedPartNames: [String: [String]]
  /// Parts released so far.
  private var releasedParts = Set<String>()

  /// The trained parameters of full fine-tuning (every gradient), by Hugging Face name;
  /// norms take no weight decay, as in transformers' Trainer.
  public var trainableTensors: [TrainableTensor] {
    gradients.keys.sorted().compactMap { name in
      guard let v = parameters[name], let g = gradients[name] else { return nil }
      return TrainableTensor(name: name, value: v, gradient: g,
                             decays: !(name.hasSuffix("norm.weight") || name.hasSuffix(".bias")))
    }
  }

  /// Sets every gradient to zero (call before the first micro-batch of a step).
  public func zeroGradients() throws {
    if let gradientArena { try backend.fill(gradientArena, value: 0) }
  }

  /// True when any gradient exists.
  public var hasGradients: Bool { gradientArena != nil || layers.contains { $0.isTrained } }

  /// The lowest layer with a trained parameter (0 when the embedding is trained): backward
  /// stops there. nil when only parameters above every layer (final norm, LM head) train.
  var lowestTrainedLayer: Int? {
    if embeddingGrad != nil { return 0 }
    return layers.firstIndex { $0.isTrained }
  }

  /// A frozen matrix rounded to `dtype` (f16 / bf16, nearest even) on the host and uploaded.
  /// f16 holds at most 65504: a larger weight would become inf, so it is refused by name.
  static func upload16(_ values: [Float], shape: [Int], _ dtype: DType, name: String,
                       on backend: Backend) throws -> Tensor {
    try backend.tensor(try bits16(values, dtype, name: name), shape: shape, dtype)
  }

  /// `values` rounded to f16 / bf16 bit patterns (nearest even); f16 refuses what it cannot hold.
  static func bits16(_ values: [Float], _ dtype: DType, name: String) throws -> [UInt16] {
    let bits: [UInt16]
    if dtype == .f16 {
      if let i = values.firstIndex(where: { abs($0) > Float(Float16.greatestFiniteMagnitude) }) {
        throw ModelWeightsError(name, "holds \(values[i]) at element \(i), beyond fp16's range (±65504); "
          + "train with bf16 (same range as f32) or in f32")
      }
      bits = values.map { Float16($0).bitPattern }
    } else {
      bits = values.map { BFloat16.fromFloat($0) }
    }
    return bits
  }


  /// n rounded up to a multiple of 64 elements.
  static func aligned(_ n: Int) -> Int { (n + 63) / 64 * 64 }
}
