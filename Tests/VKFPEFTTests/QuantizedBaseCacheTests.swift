// The QLoRA NF4 base cache: a stored base loads back to the same codes, scales and logits as
// quantising afresh; its key changes with the source file's contents and with the settings;
// a damaged cache file is refused by name.
import Foundation
import XCTest
import VKFCore
@testable import VKFModel
import VKFTestSupport
@testable import VKFPEFT

final class QuantizedBaseCacheTests: XCTestCase {
  static let source = GGUFExportTests.golden.appendingPathComponent("llama_untied.weights.safetensors")
  static let shape = GGUFModelExportTests.shape

  func temporary() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-qcache-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
    return dir
  }

  func quantized(_ url: URL, doubleQuant: Bool = true) throws -> (SafetensorsFile, DecoderWeights) {
    let file = try SafetensorsFile(contentsOf: url)
    var r = QuantizationReport()
    return (file, try QLoRA.load(from: file, shape: Self.shape, backend: TestBackends.cpu,
                                 options: .init(doubleQuant: doubleQuant), report: &r))
  }

  func logits(_ w: DecoderWeights) throws -> [Float] {
    let model = try DecoderModel(weights: w)
    try model.forward(ids: [5, 17, 42, 9, 33, 61], batch: 1)
    return try TestBackends.cpu.floats(try XCTUnwrap(model.logits))
  }

  func test_storedBase_loadsBackBitForBit() throws {
    for doubleQuant in [true, false] {
      let cache = QuantizedBaseCache(directory: try temporary().appendingPathComponent("cache"))
      let (file, fresh) = try quantized(Self.source, doubleQuant: doubleQuant)
      let key = try cache.key(source: file, shape: Self.shape, options: .init(doubleQuant: doubleQuant))
      XCTAssertNil(try cache.load(key: key, backend: TestBackends.cpu), "empty cache")
      try cache.store(fresh, key: key)
      let bases = try XCTUnwrap(try cache.load(key: key, backend: TestBackends.cpu))
      XCTAssertEqual(bases.count, 7 * Self.shape.layers)
      let be = TestBackends.cpu
      try fresh.updateProjections { module, linear in
        guard case .nf4(let want) = linear.base, case .nf4(let got)? = bases[module + ".weight"] else {
          return XCTFail("\(module) not NF4 in both")
        }
        XCTAssertEqual(try be.download(got.packed, as: UInt8.self), try be.download(want.packed, as: UInt8.self), module)
        XCTAssertEqual(got.blockSize, want.blockSize)
        switch (got.scales, want.scales) {
        case (.f32(let a), .f32(let b)): XCTAssertEqual(try be.floats(a), try be.floats(b), module)
        case (.doubleQuantized(let c1, let s1, let o1), .doubleQuantized(let c2, let s2, let o2)):
          XCTAssertEqual(try be.download(c1, as: UInt8.self), try be.download(c2, as: UInt8.self), module)
          XCTAssertEqual(try be.floats(s1), try be.floats(s2), module)
          XCTAssertEqual(o1.bitPattern, o2.bitPattern, module)
        default: XCTFail("\(module): scale kinds differ")
        }
      }
      let cached = try DecoderWeights(from: file, shape: Self.shape, backend: be, trainable: .none, cachedBases: bases)
      XCTAssertEqual(try logits(cached), try logits(fresh), "double quant \(doubleQuant)")
    }
  }

  func test_key_followsContentsAndSettings() throws {
    let dir = try temporary()
    let copy = dir.appendingPathComponent("model.safetensors")
    try FileManager.default.copyItem(at: Self.source, to: copy)
    let cache = QuantizedBaseCache(directory: dir.appendingPathComponent("cache"))
    let options = QLoRA.Options()
    let key = try cache.key(source: try SafetensorsFile(contentsOf: copy), shape: Self.shape, options: options)
    XCTAssertEqual(try cache.key(source: try SafetensorsFile(contentsOf: copy), shape: Self.shape, options: options), key)
    XCTAssertNotEqual(try cache.key(source: try SafetensorsFile(contentsOf: copy), shape: Self.shape,
                                    options: .init(doubleQuant: false)), key)
    XCTAssertNotEqual(try cache.key(source: try SafetensorsFile(contentsOf: copy), shape: Self.shape,
                                    options: .init(blockSize: 128)), key)
    // Rewrite the file with one weight changed: a new modification time, a new digest.
    var values = try SafetensorsFile(contentsOf: copy).floats("model.norm.weight")
    values[0] += 1
    var floats = [String: ([Int], [Float])]()
    let file = try SafetensorsFile(contentsOf: Self.source)
    for name in file.tensorNames { floats[name] = (try file.shape(of: name), try file.floats(name)) }
    floats["model.norm.weight"]!.1 = values
    Thread.sleep(forTimeInterval: 0.01)
    try SafetensorsWriter.write(floats: floats, to: copy)
    XCTAssertNotEqual(try cache.key(source: try SafetensorsFile(contentsOf: copy), shape: Self.shape, options: options), key)
  }

  func test_damagedCacheFile_isRefusedByName() throws {
    let cache = QuantizedBaseCache(directory: try temporary())
    let (file, fresh) = try quantized(Self.source)
    let key = try cache.key(source: file, shape: Self.shape, options: .init())
    try cache.store(fresh, key: key)
    let url = cache.url(for: key)
    try Data("not a safetensors file".utf8).write(to: url)
    XCTAssertThrowsError(try cache.load(key: key, backend: TestBackends.cpu)) { XCTAssertTrue("\($0)".contains(url.path), "\($0)") }
    try SafetensorsWriter.write(floats: ["x": ([2], [1, 2])], to: url)
    XCTAssertThrowsError(try cache.load(key: key, backend: TestBackends.cpu)) { XCTAssertTrue("\($0)".contains(url.path), "\($0)") }
  }
}
