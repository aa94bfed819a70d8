import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of the mixture-of-experts kernels (moe_*.comp, grouped_matmul.comp)
// against the CPU backend. Legend: N tokens, E experts, K experts per token, R expert rows,
// C model width, F expert width. Integer outputs (experts, offsets, slots, sources, counts)
// must be equal; shapes stay small (lavapipe is ~70× slower than OpenBLAS).

final class MoEShaderTests: LinearShaderTestCase {
  /// Copies and one product per element (gather; combine's ≤ K products summed in the same
  /// order as the CPU; the aux loss's few divisions in the same order): one or two f32
  /// roundings, allowing a fused multiply-add or Vulkan's 2.5-ULP division.
  static let elementwiseNMSE = BlockCheck.elementwiseNMSE
  static let elementwiseMaxAbs = BlockCheck.elementwiseMaxAbs
  /// The router's softmax calls exp (a few ULP apart between lavapipe's LLVM and the CPU's
  /// expf); weights are probabilities, possibly divided by their sum.
  static let routeNMSE = BlockCheck.transcendentalNMSE
  static let routeMaxAbs = BlockCheck.transcendentalMaxAbs
  /// The route backward sums E and K terms in the CPU's order, but its divisions by the
  /// picked mass may round differently and feed the E-term sum: a few roundings of O(1)
  /// values.
  static let routeBackNMSE = 1e-11
  static let routeBackMaxAbs = 1e-6
  /// Tree-shaped (combine backward over C, router statistics over token chunks) against the
  /// CPU's running sums: BlockCheck's reduction bound.
  static let reductionNMSE = BlockCheck.reductionNMSE
  static let reductionMaxAbs = BlockCheck.reductionMaxAbs
  /// The router's probability sums reach ~170 over 337 tokens: each of the CPU's running adds
  /// rounds by up to ½ulp(256) ≈ 1.5e-5, a random walk of √337 of them ≈ 3e-4, against the
  /// shader's chunked sums. 1e-3 absolute; a wrong or missing term fails the NMSE bound.
  static let probabilitySumMaxAbs = 1e-3

  static let n = 37, e = 6, k = 2, c = 24, f = 20

  func testMoEPushes_matchShaderBlocks() {
    XCTAssertEqual(MemoryLayout<MoERoutePush>.size, 4 * 4)        // n, e, k, normalize
    XCTAssertEqual(MemoryLayout<MoEDispatchPush>.size, 6 * 4)     // pairs, e, alignment, rows, chunk, chunks
    XCTAssertEqual(MemoryLayout<MoEGatherPush>.size, 5 * 4)       // rows, cols, pairs, k, hasWeights
    XCTAssertEqual(MemoryLayout<MoECombinePush>.size, 6 * 4)      // n, cols, k, rows, hasWeights, accumulate
    XCTAssertEqual(MemoryLayout<MoECombineBackPush>.size, 4 * 4)  // pairs, cols, k, rows
    XCTAssertEqual(MemoryLayout<MoERouterStatsPush>.size, 6 * 4)  // n, e, k, chunk, chunks, hasMask
    XCTAssertEqual(MemoryLayout<MoEAuxLossPush>.size, 3 * 4)      // e, coefficient, hasWeight
    XCTAssertEqual(MemoryLayout<MoERouteBackPush>.size, 6 * 4)    // n, e, k, normalize, hasAux, hasMask
    XCTAssertEqual(MemoryLayout<GroupedMatmulPush>.size, 11 * 4)  // m … sliceRows, beta
  }

  // MARK: - Helpers

  /// Fails unless `actual` is within the bounds of `expected`.
  private func assertClose(_ expected: [Float], _ actual: [Float], nmse: Double, maxAbs: Double, _ what: String,
                           file: StaticString = #filePath, line: UInt = #line) {
    if let msg = Compare.check(expected, actual, nmse: nmse, maxAbs: maxAbs) {
      XCTFail("\(what): \(msg)", file: file, line: line)
    }
  }

  /// Pairs' experts in [0, E − 1): expert E − 1 gets no token.
  private func pairExperts(_ n: Int, seed: UInt64) -> [Int32] {
    TestData.ints(n * Self.k, seed: seed, upper: Int32(Self.e - 1))
  }

  /// Runs moeDispatch on `be`: (offsets, slots, sources) for R rows.
  private func dispatch(_ be: any Backend, _ experts: [Int32], n: Int, alignment: Int, rows: Int) throws
    -> (offsets: Tensor, slots: Tensor, sources: Tensor) {
    // Garbage first: every element must be written.
    let offsets = try be.tensor([Int32](repeating: 7, count: Self.e + 1), shape: [Self.e + 1])
    let slots = try be.tensor([Int32](repeating: 7, count: n * Self.k), shape: [n, Self.k])
    let sources = try be.tensor([Int32](repeating: 7, count: rows), shape: [rows])
    try be.moeDispatch(experts: try be.tensor(experts, shape: [n, Self.k]), expertCount: Self.e,
                       alignment: alignment, offsets: offsets, slots: slots, sources: sources)
    return (offsets, slots, sources)
  }

  // MARK: - Routing

  /// Softmax and top-K, normalised or not; row 0 is a four-way tie and row 1 a two-way tie
  /// at the top: the lower index comes first on both backends.
  func testMoERoute_tiesToLowerIndex_matchesCPU() throws {
    let (n, e) = (Self.n, Self.e)
    var logits = TestData.uniform(n * e, seed: 1, -2, 2)
    for j in 0..<e { logits[j] = j < 4 ? 0.5 : -1 }
    logits[e + 2] = 3; logits[e + 4] = 3
    for (topK, normalize) in [(2, true), (2, false), (e, true)] {
      let r = try BlockCheck.both { be in
        let probs = try be.allocate([n, e]), w = try be.allocate([n, topK])
        let ex = try be.allocate([n, topK], .i32)
        try be.moeRoute(logits: try be.tensor(logits, shape: [n, e]), topK: topK, normalize: normalize,
                        probs: probs, weights: w, experts: ex)
        return [try be.floats(ex), try be.floats(probs), try be.floats(w)]
      }
      let what = "moeRoute topK \(topK) normalize \(normalize)"
      XCTAssertEqual(r.vk[0], r.cpu[0], "\(what): experts")
      XCTAssertEqual(Array(r.vk[0].prefix(2)), [0, 1], "\(what): four-way tie")
      XCTAssertEqual(Array(r.vk[0][topK..<(topK + 2)]), [2, 4], "\(what): two-way tie")
      assertClose(r.cpu[1], r.vk[1], nmse: Self.routeNMSE, maxAbs: Self.routeMaxAbs, "\(what): probs")
      assertClose(r.cpu[2], r.vk[2], nmse: Self.routeNMSE, maxAbs: Self.routeMaxAbs, "\(what): weights")
    }
  }

  /// Through the top-K (normalised or not), the aux gradient and token mask, then the softmax.
  func testMoERouteBackward_matchesCPU() throws {
    let (n, e, k) = (Self.n, Self.e, Self.k)
    let cpu = TestBackends.cpu
    let logits = TestData.uniform(n * e, seed: 2, -2, 2)
    let dw = TestData.uniform(n * k, seed: 3), aux = TestData.uniform(e, seed: 4)
    let mask = (0..<n).map { Float($0 % 3 == 0 ? 0 : 1) }
    for normalize in [true, false] {
      // The same routing on both: the CPU's, uploaded.
      let probs = try cpu.allocate([n, e]), w = try cpu.allocate([n, k]), ex = try cpu.allocate([n, k], .i32)
      try cpu.moeRoute(logits: try cpu.tensor(logits, shape: [n, e]), topK: k, normalize: normalize,
                       probs: probs, weights: w, experts: ex)
      let p = try cpu.floats(probs), wv = try cpu.floats(w), xv = try cpu.download(ex, as: Int32.self)
      for (withAux, withMask) in [(true, true), (false, false)] {
        let r = try BlockCheck.both { be in
          let out = try be.tensor([Float](repeating: .nan, count: n * e), shape: [n, e])
          try be.moeRouteBackward(dWeights: try be.tensor(dw, shape: [n, k]), probs: try be.tensor(p, shape: [n, e]),
                                  weights: try be.tensor(wv, shape: [n, k]), experts: try be.tensor(xv, shape: [n, k]),
                                  normalize: normalize, auxGradient: withAux ? try be.tensor(aux, shape: [e]) : nil,
                                  tokenMask: withMask ? try be.tensor(mask, shape: [n]) : nil, into: out)
          return [try be.floats(out)]
        }
        assertClose(r.cpu[0], r.vk[0], nmse: Self.routeBackNMSE, maxAbs: Self.routeBackMaxAbs,
                    "moeRouteBackward normalize \(normalize) aux/mask \(withAux)")
      }
    }
  }

  // MARK: - Dispatch, gather, combine

  /// Offsets, slots and sources equal the CPU's for alignments 1, 4 and the Vulkan row tile,
  /// with an expert that gets no token, spare rows after offsets[E] (−1), and 300 pairs
  /// (two counting chunks).
  func testMoEDispatch_alignmentsAndEmptyExpert_equalCPU() throws {
    let vkAlign = try BlockCheck.vulkan().moeRowAlignment
    for (n, alignment) in [(Self.n, 1), (Self.n, 4), (Self.n, vkAlign), (150, 4)] {
      let experts = pairExperts(n, seed: UInt64(n + alignment))
      let rows = MoE.rowCapacity(tokens: n, topK: Self.k, experts: Self.e, alignment: alignment) + 5
      let r = try BlockCheck.both { be in
        let d = try dispatch(be, experts, n: n, alignment: alignment, rows: rows)
        return [try be.floats(d.offsets), try be.floats(d.slots), try be.floats(d.sources)]
      }
      XCTAssertEqual(r.vk, r.cpu, "moeDispatch n \(n) alignment \(alignment)")
      XCTAssertEqual(r.vk[0][Self.e - 1], r.vk[0][Self.e], "expert \(Self.e - 1) has an empty segment")
      XCTAssertEqual(r.vk[2].last, -1, "rows after offsets[E] hold −1")
    }
  }

  /// Gather (weighted or not), combine (weighted, or plain and accumulating) and the
  /// combine's weight gradient, on the rows of an alignment-4 dispatch.
  func testMoEGatherCombine_matchesCPU() throws {
    let (n, k, c) = (Self.n, Self.k, Self.c)
    let experts = pairExperts(n, seed: 5)
    let rows = MoE.rowCapacity(tokens: n, topK: k, experts: Self.e, alignment: 4)
    let x = TestData.uniform(n * c, seed: 6), w = TestData.uniform(n * k, seed: 7, 0, 1)
    let y = TestData.uniform(rows * c, seed: 8), out0 = TestData.uniform(n * c, seed: 9)
    let dOut = TestData.uniform(n * c, seed: 10)
    let r = try BlockCheck.both { be in
      let d = try dispatch(be, experts, n: n, alignment: 4, rows: rows)
      let xt = try be.tensor(x, shape: [n, c]), wt = try be.tensor(w, shape: [n, k]), yt = try be.tensor(y, shape: [rows, c])
      let g1 = try be.tensor([Float](repeating: .nan, count: rows * c), shape: [rows, c])
      let g2 = try be.allocate([rows, c])
      try be.moeGather(xt, sources: d.sources, topK: k, weights: wt, into: g1)
      try be.moeGather(xt, sources: d.sources, topK: k, weights: nil, into: g2)
      let o1 = try be.tensor([Float](repeating: .nan, count: n * c), shape: [n, c])
      let o2 = try be.tensor(out0, shape: [n, c])
      try be.moeCombine(yt, slots: d.slots, weights: wt, into: o1, accumulate: false)
      try be.moeCombine(yt, slots: d.slots, weights: nil, into: o2, accumulate: true)
      let dw = try be.allocate([n, k])
      try be.moeCombineBackward(try be.tensor(dOut, shape: [n, c]), rows: yt, slots: d.slots, dWeights: dw)
      return try [g1, g2, o1, o2, dw].map { try be.floats($0) }
    }
    let names = ["gather weighted", "gather", "combine weighted", "combine accumulate"]
    for (i, what) in names.enumerated() {
      assertClose(r.cpu[i], r.vk[i], nmse: Self.elementwiseNMSE, maxAbs: Self.elementwiseMaxAbs, what)
    }
    assertClose(r.cpu[4], r.vk[4], nmse: Self.reductionNMSE, maxAbs: Self.reductionMaxAbs, "combine backward")
  }

  /// The combine backward's workgroup sum both ways: subgroup arithmetic and the
  /// shared-memory tree (devices without it).
  func testMoECombineBackward_bothReductionVariants_matchCPU() throws {
    let vk = try BlockCheck.vulkan()
    let original = vk.useSubgroupReductions
    defer { vk.useSubgroupReductions = original }
    let (n, k, c, rows) = (Self.n, Self.k, Self.c, 50)
    let slots = TestData.ints(n * k, seed: 11, upper: Int32(rows))
    let y = TestData.uniform(rows * c, seed: 12), dOut = TestData.uniform(n * c, seed: 13)
    for subgroups in [true, false] where !subgroups || vk.capabilities.subgroupOperations.contains("arithmetic") {
      vk.useSubgroupReductions = subgroups
      let r = try BlockCheck.both { be in
        let dw = try be.allocate([n, k])
        try be.moeCombineBackward(try be.tensor(dOut, shape: [n, c]), rows: try be.tensor(y, shape: [rows, c]),
                                  slots: try be.tensor(slots, shape: [n, k]), dWeights: dw)
        return [try be.floats(dw)]
      }
      assertClose(r.cpu[0], r.vk[0], nmse: Self.reductionNMSE, maxAbs: Self.reductionMaxAbs,
                  "combine backward, subgroups \(subgroups)")
    }
  }

  // MARK: - Grouped matmul

  /// The expert products of one MLP projection on the rows of a dispatch: forward x·Wᵀ (into
  /// c pre-filled, β = 0: rows after offsets[E] untouched), the input gradient dy·W with
  /// β = 0.5, and the weight gradients dyᵀ·x accumulated with β = 1.
  private func checkGrouped(alignment: Int, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
    let (n, e, k, c, f) = (Self.n, Self.e, Self.k, Self.c, Self.f)
    let experts = pairExperts(n, seed: seed)
    let rows = MoE.rowCapacity(tokens: n, topK: k, experts: e, alignment: alignment) + 3
    let x = TestData.uniform(rows * c, seed: seed + 1), w = TestData.uniform(e * f * c, seed: seed + 2)
    let dy = TestData.uniform(rows * f, seed: seed + 3), y0 = TestData.uniform(rows * f, seed: seed + 4)
    let dx0 = TestData.uniform(rows * c, seed: seed + 5), dw0 = TestData.uniform(e * f * c, seed: seed + 6)
    let r = try BlockCheck.both(file: file, line: line) { be in
      let d = try dispatch(be, experts, n: n, alignment: alignment, rows: rows)
      let xt = try be.tensor(x, shape: [rows, c]), wt = try be.tensor(w, shape: [e, f, c])
      let dyt = try be.tensor(dy, shape: [rows, f])
      let yt = try be.tensor(y0, shape: [rows, f]), dxt = try be.tensor(dx0, shape: [rows, c])
      let dwt = try be.tensor(dw0, shape: [e, f, c])
      try be.groupedMatmul(xt, wt, into: yt, offsets: d.offsets, transposeA: false, transposeB: true, beta: 0)
      try be.groupedMatmul(dyt, wt, into: dxt, offsets: d.offsets, transposeA: false, transposeB: false, beta: 0.5)
      try be.groupedMatmul(dyt, xt, into: dwt, offsets: d.offsets, transposeA: true, transposeB: false, beta: 1)
      return try [d.offsets, yt, dxt, dwt].map { try be.floats($0) }
    }
    let what = "groupedMatmul alignment \(alignment)"
    XCTAssertEqual(r.vk[0], r.cpu[0], "\(what): offsets", file: file, line: line)
    let end = Int(r.vk[0][e])
    XCTAssertEqual(Array(r.vk[1][(end * f)...]), Array(y0[(end * f)...]), "\(what): rows after offsets[E]",
                   file: file, line: line)
    LinearCheck.assertClose(r.cpu[1], r.vk[1], k: c, "\(what) forward", file: file, line: line)
    LinearCheck.assertClose(r.cpu[2], r.vk[2], k: f, "\(what) input gradient", file: file, line: line)
    LinearCheck.assertClose(r.cpu[3], r.vk[3], k: rows, "\(what) weight gradient", file: file, line: line)
  }

  /// Segments padded to the row tile (one expert per tile), and unpadded (tiles spanning
  /// segments, each written one segment at a time).
  func testGroupedMatmul_threeModes_matchCPU() throws {
    try checkGrouped(alignment: try BlockCheck.vulkan().moeRowAlignment, seed: 20)
    try checkGrouped(alignment: 1, seed: 30)
  }

  /// K slices (not transposeA) and segment-row slices (transposeA) accumulated through β,
  /// as lavapipe's loop cap takes them, on a one-workgroup grid (grid-stride loops).
  func testGroupedMatmul_slicedAndGridStrided_matchesCPU() throws {
    VulkanBackend.groupedSliceOverride = 16
    VulkanBackend.gridLimitOverride = (1, 1, 1)
    defer {
      VulkanBackend.groupedSliceOverride = nil
      VulkanBackend.gridLimitOverride = nil
    }
    try checkGrouped(alignment: 4, seed: 40)
  }

  // MARK: - Load balancing

  /// Statistics accumulated over two batches (one masked, 300 tokens: three partial chunks),
  /// then the aux loss with and without a weight, and with no counted token.
  func testMoERouterStatisticsAndAuxLoss_matchCPU() throws {
    let e = Self.e, k = Self.k, width = 2 * e + 1
    let batches = [(n: Self.n, seed: UInt64(50)), (n: 300, seed: 60)]
    let r = try BlockCheck.both { be in
      // Counts start at whole numbers, as they always are.
      let stats = try be.tensor((0..<width).map { Float($0 % 3) }, shape: [width])
      for (i, b) in batches.enumerated() {
        let probs = TestData.uniform(b.n * e, seed: b.seed, 0, 1)
        let mask = (0..<b.n).map { Float($0 % 4 == 1 ? 0 : 1) }
        try be.moeRouterStatistics(probs: try be.tensor(probs, shape: [b.n, e]),
                                   experts: try be.tensor(pairExperts(b.n, seed: b.seed + 1), shape: [b.n, k]),
                                   tokenMask: i == 0 ? try be.tensor(mask, shape: [b.n]) : nil, into: stats)
      }
      let loss1 = try be.tensor([Float(0.25)], shape: [1]), g1 = try be.allocate([e])
      try be.moeAuxLoss(stats: stats, coefficient: 0.02, weight: try be.tensor([Float(0.5)], shape: [1]),
                        lossSum: loss1, gradient: g1)
      let loss2 = try be.tensor([Float(0)], shape: [1]), g2 = try be.allocate([e])
      try be.moeAuxLoss(stats: stats, coefficient: 0.01, weight: nil, lossSum: loss2, gradient: g2)
      let loss3 = try be.tensor([Float(1)], shape: [1])
      let g3 = try be.tensor([Float](repeating: .nan, count: e), shape: [e])
      try be.moeAuxLoss(stats: try be.tensor([Float](repeating: 0, count: width), shape: [width]),
                        coefficient: 0.01, weight: nil, lossSum: loss3, gradient: g3)
      return try [stats, loss1, g1, loss2, g2, loss3, g3].map { try be.floats($0) }
    }
    let s = (cpu: r.cpu[0], vk: r.vk[0])
    XCTAssertEqual(Array(s.vk[0..<e]), Array(s.cpu[0..<e]), "pair counts")
    XCTAssertEqual(s.vk[2 * e], s.cpu[2 * e], "token count")
    assertClose(Array(s.cpu[e..<(2 * e)]), Array(s.vk[e..<(2 * e)]), nmse: Self.reductionNMSE,
                maxAbs: Self.probabilitySumMaxAbs, "probability sums")
    // The loss inherits the probability sums' rounding; the gradient uses counts only.
    for i in 1...6 {
      let bound = i == 1 || i == 3 ? Self.reductionNMSE : Self.elementwiseNMSE
      assertClose(r.cpu[i], r.vk[i], nmse: bound, maxAbs: Self.elementwiseMaxAbs, "aux loss output \(i)")
    }
    XCTAssertEqual(r.vk[5], [1], "no counted token: lossSum unchanged")
    XCTAssertEqual(r.vk[6], [Float](repeating: 0, count: e), "no counted token: zero gradient")
  }

  // MARK: - Recorded replay and bad indices

  /// A recorded MoE forward (route, dispatch, gather, expert product, combine) replayed
  /// with new logits follows the new routing: nothing in it was read on the host.
  func testMoEForward_recordedOnce_replaysNewRouting() throws {
    let vk = try BlockCheck.vulkan()
    let (n, e, k, c, f) = (Self.n, Self.e, Self.k, Self.c, Self.f)
    let align = vk.moeRowAlignment
    let rows = MoE.rowCapacity(tokens: n, topK: k, experts: e, alignment: align)
    let x = TestData.uniform(n * c, seed: 70), w = TestData.uniform(e * f * c, seed: 71)
    func forward(_ be: any Backend, logits: Tensor) throws -> (body: () throws -> Void, out: Tensor) {
      let probs = try be.allocate([n, e]), wt = try be.allocate([n, k]), ex = try be.allocate([n, k], .i32)
      let off = try be.allocate([e + 1], .i32), slots = try be.allocate([n, k], .i32)
      let src = try be.allocate([rows], .i32), xr = try be.allocate([rows, c]), yr = try be.allocate([rows, f])
      let xt = try be.tensor(x, shape: [n, c]), weight = try be.tensor(w, shape: [e, f, c])
      let out = try be.allocate([n, f])
      let body = {
        try be.moeRoute(logits: logits, topK: k, normalize: true, probs: probs, weights: wt, experts: ex)
        try be.moeDispatch(experts: ex, expertCount: e, alignment: align, offsets: off, slots: slots, sources: src)
        try be.moeGather(xt, sources: src, topK: k, weights: nil, into: xr)
        try be.groupedMatmul(xr, weight, into: yr, offsets: off, transposeA: false, transposeB: true, beta: 0)
        try be.moeCombine(yr, slots: slots, weights: wt, into: out, accumulate: false)
      }
      return (body, out)
    }
    let logitsVK = try vk.allocate([n, e])
    let step = try forward(vk, logits: logitsVK)
    let recording = try vk.record(step.body)
    for seed in [UInt64(72), 73] {
      let logits = TestData.uniform(n * e, seed: seed, -2, 2)
      try vk.upload(logits, to: logitsVK)
      try vk.replay([recording])
      let got = try vk.floats(step.out)
      let cpu = TestBackends.cpu
      let ref = try forward(cpu, logits: try cpu.tensor(logits, shape: [n, e]))
      try ref.body()
      LinearCheck.assertClose(try cpu.floats(ref.out), got, k: c, "replay with logits seed \(seed)")
    }
  }

  /// Experts, sources and slots out of range are skipped (the CPU backend throws): no
  /// crash, no validation error, and the valid entries still land where they belong.
  func testMoE_outOfRangeIndices_areSkipped() throws {
    let vk = try BlockCheck.vulkan()
    // Pairs (2 tokens × 2): experts 0, 7 (≥ E = 2), −1, 1.
    let ex = try vk.tensor([Int32(0), 7, -1, 1], shape: [2, 2])
    let off = try vk.allocate([3], .i32), slots = try vk.allocate([2, 2], .i32)
    let src = try vk.allocate([4], .i32)
    try vk.moeDispatch(experts: ex, expertCount: 2, alignment: 1, offsets: off, slots: slots, sources: src)
    XCTAssertEqual(try vk.download(off, as: Int32.self), [0, 1, 2])
    XCTAssertEqual(try vk.download(slots, as: Int32.self), [0, -1, -1, 1])
    XCTAssertEqual(try vk.download(src, as: Int32.self), [0, 3, -1, -1])

    let x = try vk.tensor([Float(1), 2, 3, 4], shape: [2, 2])
    let rows = try vk.allocate([3, 2])
    try vk.moeGather(x, sources: try vk.tensor([Int32(3), 9, -1], shape: [3]), topK: 2, weights: nil, into: rows)
    XCTAssertEqual(try vk.floats(rows), [3, 4, 0, 0, 0, 0])

    let badSlots = try vk.tensor([Int32(0), -1, 5, 2], shape: [2, 2])
    let out = try vk.allocate([2, 2])
    try vk.moeCombine(rows, slots: badSlots, weights: nil, into: out, accumulate: false)
    XCTAssertEqual(try vk.floats(out), [3, 4, 0, 0])
    let dw = try vk.allocate([2, 2])
    try vk.moeCombineBackward(try vk.tensor([Float](repeating: 1, count: 4), shape: [2, 2]), rows: rows,
                              slots: badSlots, dWeights: dw)
    XCTAssertEqual(try vk.floats(dw), [7, 0, 0, 0])

    let stats = try vk.tensor([Float](repeating: 0, count: 5), shape: [5])
    try vk.moeRouterStatistics(probs: try vk.tensor([Float(0.5), 0.5, 0.25, 0.75], shape: [2, 2]), experts: ex,
                               tokenMask: nil, into: stats)
    XCTAssertEqual(try vk.floats(stats), [1, 1, 0.75, 1.25, 2])
  }
}
