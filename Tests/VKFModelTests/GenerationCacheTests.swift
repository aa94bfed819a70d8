import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
import VKFVulkan

/// The cached forward (prefill + single-token steps) against the full-sequence training
/// forward on the golden tiny models, batch 2, on each backend.
final class GenerationCacheTests: XCTestCase {
  /// Cached vs full forward: the same ops on the same f32 data; only the attention matmuls
  /// see other shapes (Tk keys instead of T, Tn query rows instead of T), which changes
  /// OpenBLAS / shader blocking and so the summation order. Measured ≤ 1e-13 NMSE on CPU;
  /// ModelGoldenTests' logits bound (vs PyTorch, another order entirely) is reused.
  static let cacheTolerance = ModelTolerance(nmse: 1e-11, maxAbs: 1e-5)

  func test_cachedSteps_equalFullForward_llamaGQA_cpu() throws { try check("llama_untied", on: TestBackends.cpu) }
  func test_cachedSteps_equalFullForward_qwen2Bias_cpu() throws { try check("qwen2_tied", on: TestBackends.cpu) }
  func test_cachedSteps_equalFullForward_llamaGQA_vulkan() throws {
    try check("llama_untied", on: try ModelFixtures.vulkanOrSkip())
  }
  func test_cachedSteps_equalFullForward_qwen2Bias_vulkan() throws {
    try check("qwen2_tied", on: try ModelFixtures.vulkanOrSkip())
  }
  /// A prompt longer than the prefill chunk runs in several passes with the same result.
  /// Past the window the cache keeps every key and the mask hides the old ones: decoding
  /// token by token equals the windowed full forward (itself equal to transformers).
  func test_cachedSteps_equalFullForward_slidingWindow_cpu() throws {
    try check("mistral_window", on: TestBackends.cpu)
    try check("qwen2_window", on: TestBackends.cpu)
  }
  /// Qwen3's per-head q/k RMSNorm on the cached path (new keys normalised before the cache).
  func test_cachedSteps_equalFullForward_qwen3QKNorm() throws {
    try check("qwen3_qknorm", on: TestBackends.cpu)
    try check("gemma", on: TestBackends.cpu)  // GeGLU, (1 + w) norms, scaled embedding
    try check("gemma3", on: TestBackends.cpu)  // sandwich norms, local RoPE on the windowed layer
    try check("gemma3", on: try ModelFixtures.vulkanOrSkip())
    // Soft-capped scores (scale then cap, softmax unscaled) and logits on the cached path.
    try check("gemma2", on: TestBackends.cpu)
    try check("gemma2", on: try ModelFixtures.vulkanOrSkip())
    try check("phi3", on: TestBackends.cpu)  // fused projections' views on the cached path
    try check("qwen3_qknorm", on: try ModelFixtures.vulkanOrSkip())
  }
  /// Mixture of experts on the cached path: routing over the new tokens only (prefill, then
  /// one token per step), a dense layer beside a sparse one (qwen3_moe), a shared expert
  /// (qwen2_moe).
  func test_cachedSteps_equalFullForward_experts_cpu() throws {
    try check("mixtral", on: TestBackends.cpu)
    try check("qwen3_moe", on: TestBackends.cpu)
    try check("qwen2_moe", on: TestBackends.cpu)
    try check("qwen3_moe", on: try ModelFixtures.vulkanOrSkip())
    try check("qwen2_moe", on: try ModelFixtures.vulkanOrSkip())
  }
  func test_cachedSteps_equalFullForward_slidingWindow_vulkan() throws {
    try check("mistral_window", on: try ModelFixtures.vulkanOrSkip())
  }

  func test_chunkedPrefill_equalsFullForward_cpu() throws {
    try check("llama_tied", on: TestBackends.cpu, prompt: 5, chunk: 2)
  }

  func test_forward_pastCapacity_throws() throws {
    let model = try GoldenCase.load("llama_tied").model(on: TestBackends.cpu, trainable: .none)
    let cache = try model.makeKVCache(batch: 1, capacity: 4)
    _ = try model.forward(newIDs: [1, 2, 3], cache: cache)
    XCTAssertThrowsError(try model.forward(newIDs: [4, 5], cache: cache))
    cache.reset()
    XCTAssertEqual(try model.forward(newIDs: [1, 2, 3, 4], cache: cache).count, 97)
  }

  /// Prefill `prompt` tokens per row, then one token per step; compare each returned (B, V)
  /// with the full forward's logits at the same positions.
  private func check(_ name: String, on backend: Backend, prompt: Int = 3, chunk: Int = 128) throws {
    let g = try GoldenCase.load(name)
    let model = try g.model(on: backend, trainable: .none)
    let ids = try g.ids, b = g.batch, t = ids.count / b, v = g.shape.vocab
    try model.forward(ids: ids, batch: b)
    let full = try backend.floats(try XCTUnwrap(model.logits))  // (B·T, V)
    func expected(at pos: Int) -> [Float] {
      var out: [Float] = []
      for row in 0..<b {
        let first: Int = (row * t + pos) * v
        out += full[first..<(first + v)]
      }
      return out
    }
    func columns(_ r: Range<Int>) -> [Int32] {
      var out: [Int32] = []
      for row in 0..<b { out += ids[(row * t + r.lowerBound)..<(row * t + r.upperBound)] }
      return out
    }
    let cache = try model.makeKVCache(batch: b, capacity: t + 1, prefillChunk: chunk)
    var worst = 0.0
    for step in 0...(t - prompt) {
      let range = step == 0 ? 0..<prompt : (prompt + step - 1)..<(prompt + step)
      let got = try model.forward(newIDs: columns(range), cache: cache)
      let want = expected(at: range.upperBound - 1)
      worst = max(worst, Compare.nmse(want, got))
      if let why = Compare.check(want, got, nmse: Self.cacheTolerance.nmse, maxAbs: Self.cacheTolerance.maxAbs) {
        XCTFail("\(name) on \(backend.name), position \(range.upperBound - 1): \(why)")
      }
    }
    XCTAssertEqual(cache.length, t)
    print("cache \(name) on \(backend.name): worst nmse \(worst)")
    if let vk = backend as? VulkanBackend {
      XCTAssertEqual(vk.validationMessages, []); vk.clearValidationMessages()
    }
  }
}
