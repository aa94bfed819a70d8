import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

/// The heads as components, against host arithmetic in Double: `LanguageModelHead` (a biased,
/// trained vocabulary projection, short last chunk, one ignored target, per-token weights) and
/// `ScoreHead` (which token a row is scored at, row scores, the backward). The models' goldens
/// cover them inside the decoders and BERT; these pin the components' own contracts.
final class HeadComponentTests: XCTestCase {
  /// f32 products of ≤ 8 terms and a log-sum-exp of 7 against Double.
  static let tolerance: Float = 1e-5

  private func values(_ n: Int, _ seed: Int) -> [Float] {
    (0..<n).map { Float(sin(Double($0 * 7 + seed))) * 0.8 }
  }

  private func assertClose(_ a: [Float], _ e: [Double], _ what: String) {
    XCTAssertEqual(a.count, e.count, what)
    for (i, (x, y)) in zip(a, e).enumerated() where abs(Double(x) - y) > Double(Self.tolerance) * max(1, abs(y)) {
      return XCTFail("\(what)[\(i)]: \(x) vs \(y)")
    }
  }

  func test_languageModelHead_chunkedLossAndGradients_cpu() throws { try checkLanguageModelHead(on: TestBackends.cpu) }
  func test_languageModelHead_chunkedLossAndGradients_vulkan() throws {
    try checkLanguageModelHead(on: try ModelFixtures.vulkanOrSkip())
  }

  private func checkLanguageModelHead(on be: Backend) throws {
    let (n, c, v) = (5, 8, 7)
    let x = values(n * c, 1), w = values(v * c, 2), b = values(v, 3)
    let targets: [Int32] = [3, -100, 0, 6, 2], weights: [Float] = [1, 2, -0.5, 0.25, 3]
    let dW = try be.allocate([v, c]), db = try be.allocate([v])
    try be.fill(dW, value: 0); try be.fill(db, value: 0)
    let head = LanguageModelHead(
      projection: Linear(weight: try be.tensor(w, shape: [v, c]), bias: try be.tensor(b, shape: [v]), weightGrad: dW,
                         biasGrad: db), chunkRows: 2)
    XCTAssertEqual(head.chunks(rows: n), [0..<2, 2..<4, 4..<5])
    let xt = try be.tensor(x, shape: [n, c]), tt = try be.tensor(targets, shape: [n])
    let losses = try be.allocate([n]), dx = try be.allocate([n, c]), ones = try be.allocate([n])
    let logits = try be.allocate([2, v]), wt = try be.tensor(weights, shape: [n])
    try be.fill(ones, value: 1)
    let normalizer: Float = 4  // the trained targets
    for r in head.chunks(rows: n) {
      try head.lossChunk(be, x: try xt.rows(r), targets: try tt.rows(r), logits: try logits.view(shape: [r.count, v]),
                         normalizer: .value(normalizer), losses: try losses.rows(r), gradients: true,
                         tokenWeights: try wt.rows(r), dx: try dx.rows(r), ones: try ones.rows(r))
    }
    // Host: z = x·Wᵀ + b; loss_i = (lse − z_t) / P; dz_i = w_i (softmax − onehot) / P.
    var eLoss = [Double](repeating: 0, count: n), eDx = [Double](repeating: 0, count: n * c)
    var eDW = [Double](repeating: 0, count: v * c), eDb = [Double](repeating: 0, count: v)
    for i in 0..<n where targets[i] >= 0 {
      let z = (0..<v).map { o in Double(b[o]) + (0..<c).reduce(0.0) { $0 + Double(x[i * c + $1]) * Double(w[o * c + $1]) } }
      let m = z.max() ?? 0, lse = m + log(z.reduce(0.0) { $0 + exp($1 - m) })
      let t = Int(targets[i])
      eLoss[i] = (lse - z[t]) / Double(normalizer)
      for o in 0..<v {
        let dz = Double(weights[i]) * (exp(z[o] - lse) - (o == t ? 1 : 0)) / Double(normalizer)
        eDb[o] += dz
        for k in 0..<c {
          eDx[i * c + k] += dz * Double(w[o * c + k])
          eDW[o * c + k] += dz * Double(x[i * c + k])
        }
      }
    }
    assertClose(try be.floats(losses), eLoss, "losses on \(be.name)")
    assertClose(try be.floats(dx), eDx, "dx on \(be.name)")
    assertClose(try be.floats(dW), eDW, "dW on \(be.name)")
    assertClose(try be.floats(db), eDb, "db on \(be.name)")
  }

  func test_scoreHead_scoresTheLastRealToken_andBackward_cpu() throws {
    let be = TestBackends.cpu
    // Rows of 4: the last non-pad token (pad id 0) is scored; a row of padding has none.
    XCTAssertEqual(ScoreHead.scoredPositions([5, 6, 0, 0, 7, 8, 9, 1, 0, 0, 0, 0], rows: 3, padID: 0), [1, 7, nil])
    let (rows, t, c) = (2, 4, 3)
    let h = values(rows * t * c, 4), w = values(c, 5)
    let head = try ScoreHead(values: w, backend: be)
    let hidden = try be.tensor(h, shape: [rows * t, c])
    var selector = [Float](repeating: 0, count: rows * t)
    selector[2] = 1; selector[7] = 1
    let scores = try be.allocate([rows]), tokenScores = try be.allocate([rows * t, 1]), masked = try be.allocate([rows * t])
    let ones = try be.allocate([t]); try be.fill(ones, value: 1)
    try head.rowScores(be, hidden: hidden, selector: try be.tensor(selector, shape: [rows * t]), tokenScores: tokenScores,
                       masked: masked, ones: ones, rows: rows, into: scores)
    func score(_ p: Int) -> Double { (0..<c).reduce(0.0) { $0 + Double(h[p * c + $1]) * Double(w[$1]) } }
    assertClose(try be.floats(scores), [score(2), score(7)], "row scores")
    // dL/dscore = (0.5, −2) at the scored tokens, given as −coefficients with alpha −1.
    var coefficients = [Float](repeating: 0, count: rows * t)
    coefficients[2] = -0.5; coefficients[7] = 2
    let dh = try be.allocate([rows * t, c])
    try head.backward(be, coefficients: try be.tensor(coefficients, shape: [rows * t, 1]), hidden: hidden, alpha: -1,
                      dHidden: dh)
    assertClose(try be.floats(head.gradient), (0..<c).map { 0.5 * Double(h[2 * c + $0]) - 2 * Double(h[7 * c + $0]) },
                "score gradient")
    var eDh = [Double](repeating: 0, count: rows * t * c)
    for k in 0..<c { eDh[2 * c + k] = 0.5 * Double(w[k]); eDh[7 * c + k] = -2 * Double(w[k]) }
    assertClose(try be.floats(dh), eDh, "dL/dhidden")
  }
}
