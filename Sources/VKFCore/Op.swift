/// Every op a backend implements. The parity suite walks this list and reports what a
/// backend is missing through `Backend.supports(_:_:)`.
public enum Op: String, CaseIterable, Sendable {
  // memory
  case fill, copy, cast, permute
  // linear algebra
  case matmul, dequantizeNF4, matmulNF4, dequantizeInt8, matmulInt8, fakeQuantize, loraForward
  // transformer blocks
  case rmsNorm, rmsNormBackward
  case layerNorm, layerNormBackward
  case rope, ropeBackward
  case causalSoftmax, causalSoftmaxBackward
  case attention, attentionBackward
  case swiglu, swigluBackward
  case activation, activationBackward
  case embedding, embeddingBackward
  case crossEntropy, preferenceLoss
  // mixture of experts
  case moeRoute, moeRouteBackward, moeDispatch, moeGather, moeCombine, moeCombineBackward
  case groupedMatmul, groupedMatmulNF4, moeRouterStatistics, moeAuxLoss
  // elementwise and reductions
  case add, mul, scale, scaleRows, sumOfSquares, dropoutMask
  // generation
  case sampleTokens
  // optimizer
  case adamW
}

/// How `matmul` lays out a batch: derived once from the operand shapes by `ShapeCheck`.
public struct GemmShape: Equatable, Sendable {
  /// Number of products; operands with batch 1 are broadcast (stride 0).
  public var batch: Int
  /// C is (m, n); the shared dimension is k.
  public var m: Int, n: Int, k: Int
  /// Element strides between consecutive products (0 = broadcast).
  public var strideA: Int, strideB: Int, strideC: Int
  /// Leading dimensions (row lengths) of A and B as stored.
  public var lda: Int, ldb: Int
  public var ldc: Int { n }

  public init(batch: Int, m: Int, n: Int, k: Int, strideA: Int, strideB: Int, strideC: Int,
              lda: Int, ldb: Int) {
    self.batch = batch; self.m = m; self.n = n; self.k = k
    self.strideA = strideA; self.strideB = strideB; self.strideC = strideC
    self.lda = lda; self.ldb = ldb
  }

  /// Floating-point operations of the whole batch.
  public var flops: Double { 2 * Double(batch) * Double(m) * Double(n) * Double(k) }
}

/// The geometry of fused attention (`ShapeCheck.attention`).
public struct AttentionShape: Equatable, Sendable {
  public var batch: Int, heads: Int, kvHeads: Int, tokens: Int, headDim: Int
  public init(batch: Int, heads: Int, kvHeads: Int, tokens: Int, headDim: Int) {
    self.batch = batch; self.heads = heads; self.kvHeads = kvHeads; self.tokens = tokens; self.headDim = headDim
  }
  /// Query heads per kv head.
  public var group: Int { heads / kvHeads }
}
