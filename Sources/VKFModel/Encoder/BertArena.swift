import VKFCore

/// What one BERT layer keeps from its forward for the backward.
struct BertLayerActivations {
  /// Head-major q, k, v (B, NH, T, HS).
  let q: Tensor, k: Tensor, v: Tensor
  /// The attention's log-sum-exp per query (B, NH, T).
  let lse: Tensor
  /// Attention output, token-major (N, C).
  let attn: Tensor
  /// x + o(attn), LayerNorm 1's input (N, C), and its row statistics (N).
  let preNorm1: Tensor, mean1: Tensor, rstd1: Tensor
  /// LayerNorm 1's output (N, C).
  let h1: Tensor
  /// The MLP's pre-activation and activation (N, F).
  let inter: Tensor, act: Tensor
  /// h1 + out(act), LayerNorm 2's input (N, C), and its row statistics (N).
  let preNorm2: Tensor, mean2: Tensor, rstd2: Tensor
}

/// Every buffer of a (B, T) BERT pass: inputs, the hidden states between layers, each layer's
/// saved activations, the head's and the backward's scratch — allocated once per shape.
final class BertArena {
  let batch: Int, tokens: Int
  let ids: Tensor, typeIDs: Tensor, positions: Tensor, lengths: Tensor, clsRows: Tensor, labels: Tensor
  let ones: Tensor
  /// Summed embeddings before their LayerNorm (N, C) and its row statistics.
  let embedded: Tensor, embeddingMean: Tensor, embeddingRstd: Tensor
  /// hidden[0] = the embeddings' LayerNorm output, hidden[l + 1] = layer l's output (N, C).
  let hidden: [Tensor]
  let saved: [BertLayerActivations]
  /// Scratch (N, C) ×6, (N, F), and the attention backward's delta (B, NH, T).
  let s1: Tensor, s2: Tensor, s3: Tensor, s4: Tensor, s5: Tensor, s6: Tensor, dWide: Tensor, delta: Tensor
  /// dL/d(the current layer's output) (N, C).
  let dResidual: Tensor
  /// Head: [CLS] hidden states, pooler output, their gradients / scratch (B, C); logits and
  /// their gradient (B, L); per-row losses (B).
  let pooledInput: Tensor, pooled: Tensor, dPooled: Tensor, pooledScratch: Tensor
  let logits: Tensor, dLogits: Tensor, losses: Tensor
  /// Bidirectional attention over each row's real tokens.
  let mask: AttentionMask
  /// The masked-LM head's buffers (nil for the classifier).
  let mlm: BertMLMBuffers?

  init(config c: BertConfig, labels labelCount: Int, batch b: Int, tokens t: Int, maskedLM: Bool = false,
       backend be: Backend) throws {
    batch = b; tokens = t
    let n = b * t, h = c.hiddenSize, f = c.intermediateSize
    func f32(_ shape: [Int]) throws -> Tensor { try be.allocate(shape) }
    ids = try be.allocate([n], .i32); typeIDs = try be.allocate([n], .i32)
    positions = try be.tensor((0..<n).map { Int32($0 % t) }, shape: [n])
    lengths = try be.allocate([b], .i32)
    clsRows = try be.tensor((0..<b).map { Int32($0 * t) }, shape: [b])
    labels = try be.allocate([b], .i32)
    ones = try f32([n]); try be.fill(ones, value: 1)
    embedded = try f32([n, h]); embeddingMean = try f32([n]); embeddingRstd = try f32([n])
    hidden = try (0...c.layers).map { _ in try f32([n, h]) }
    saved = try (0..<c.layers).map { _ in
      let head = [b, c.heads, t, c.headDim]
      return BertLayerActivations(
        q: try f32(head), k: try f32(head), v: try f32(head), lse: try f32([b, c.heads, t]), attn: try f32([n, h]),
        preNorm1: try f32([n, h]), mean1: try f32([n]), rstd1: try f32([n]), h1: try f32([n, h]),
        inter: try f32([n, f]), act: try f32([n, f]), preNorm2: try f32([n, h]), mean2: try f32([n]), rstd2: try f32([n]))
    }
    s1 = try f32([n, h]); s2 = try f32([n, h]); s3 = try f32([n, h]); s4 = try f32([n, h]); s5 = try f32([n, h])
    s6 = try f32([n, h]); dWide = try f32([n, f]); delta = try f32([b, c.heads, t])
    dResidual = try f32([n, h])
    pooledInput = try f32([b, h]); pooled = try f32([b, h]); dPooled = try f32([b, h]); pooledScratch = try f32([b, h])
    logits = try f32([b, labelCount]); dLogits = try f32([b, labelCount]); losses = try f32([b])
    mask = AttentionMask(causal: false, keyLengths: lengths)
    mlm = maskedLM ? try BertMLMBuffers(config: c, rows: n, backend: be) : nil
  }

  /// f32-sized elements the arena allocates (i32 buffers count one each).
  static func elements(config c: BertConfig, labels: Int, batch b: Int, tokens t: Int, maskedLM: Bool = false) -> Int {
    let n = b * t, h = c.hiddenSize, f = c.intermediateSize, stats = b * c.heads * t
    let inputs = 4 * n + 3 * b
    let perLayer = 7 * n * h + 2 * n * f + stats + 4 * n
    let scratch = 7 * n * h + n * f + stats
    let headBuffers = 4 * b * h + 2 * b * labels + b
    let mlm = maskedLM ? BertMLMBuffers.elements(config: c, rows: n) : 0
    return inputs + (n * h + 2 * n) + (c.layers + 1) * n * h + c.layers * perLayer + scratch + headBuffers + mlm
  }
}

/// The masked-LM head's buffers for up to `rows` masked tokens: their indices and labels,
/// the head's activations (gathered hidden, dense output, activation, normed) and gradient,
/// the LayerNorm statistics, per-row losses, and one chunk of logits.
final class BertMLMBuffers {
  let rows: Tensor, targets: Tensor
  let gathered: Tensor, dense: Tensor, act: Tensor, normed: Tensor, dNormed: Tensor, mean: Tensor, rstd: Tensor
  let losses: Tensor, logits: Tensor, ones: Tensor
  /// Rows of logits per chunk: 2²⁵ f32 (128 MiB) at most, a multiple of 64, at least 64.
  let chunkRows: Int

  static func chunkRows(vocab: Int) -> Int { max(64, (1 << 25) / max(vocab, 1) / 64 * 64) }

  init(config c: BertConfig, rows n: Int, backend be: Backend) throws {
    let h = c.hiddenSize
    chunkRows = min(Self.chunkRows(vocab: c.vocabSize), n)
    rows = try be.allocate([n], .i32); targets = try be.allocate([n], .i32)
    gathered = try be.allocate([n, h]); dense = try be.allocate([n, h]); act = try be.allocate([n, h])
    normed = try be.allocate([n, h]); dNormed = try be.allocate([n, h])
    mean = try be.allocate([n]); rstd = try be.allocate([n]); losses = try be.allocate([n])
    logits = try be.allocate([chunkRows, c.vocabSize])
    ones = try be.allocate([chunkRows]); try be.fill(ones, value: 1)
  }

  static func elements(config c: BertConfig, rows n: Int) -> Int {
    let chunk = min(chunkRows(vocab: c.vocabSize), n)
    return 2 * n + 5 * n * c.hiddenSize + 3 * n + chunk * c.vocabSize + chunk
  }
}
