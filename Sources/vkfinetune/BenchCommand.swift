import ArgumentParser
import Foundation
import VKFCore

/// `vkfinetune bench …`: throughput measurements (never timed tests).
struct BenchCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench", abstract: "Measure throughput.", subcommands: [BenchOps.self, BenchModel.self, BenchTrain.self, BenchGenerate.self])
}

/// `vkfinetune bench ops`: per-op GFLOP/s or GB/s at training shapes.
struct BenchOps: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ops",
    abstract: "Per-op throughput at the shapes of a SmolLM2-135M step (batch 4 × 256 tokens).")

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "Tokens per step (rows of the activations).")
  var tokens = 1024

  @Option(help: "Seconds to spend measuring each op (after one warm-up run).")
  var seconds = 1.0

  @Option(help: "Only ops whose name contains this text.")
  var filter: String?

  @Option(help: "Also write the results as JSON to this file.")
  var json: String?

  func validate() throws {
    guard tokens >= 256, tokens % 256 == 0 else { throw ValidationError("--tokens must be a positive multiple of 256") }
    guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600]") }
    if let json {
      // Fail before minutes of measuring, not after.
      let dir = URL(fileURLWithPath: json).deletingLastPathComponent().path
      guard access(dir, W_OK) == 0 else {
        throw ValidationError("--json: cannot write into \(dir) (\(String(cString: strerror(errno))))")
      }
    }
  }

  func run() throws {
    let backend = try backendOptions.makeBackend()
    print("backend: \(backend.name)")
    var results: [BenchResult] = []
    let cases = OpBenchmarks.cases(tokens: tokens).filter { c in filter.map { $0.isEmpty || c.name.contains($0) } ?? true }
    print(BenchResult.header)
    for c in cases {
      let r = try OpBenchmarks.measure(c, on: backend, seconds: seconds)
      print(r.row)
      results.append(r)
    }
    if let extra = OpBenchmarks.referenceRows(backend: backend, filter: filter, seconds: seconds) {
      for r in extra { print(r.row) }
      results += extra
    }
    if let path = json {
      let data = try JSONEncoder.pretty.encode(BenchReport(backend: backend.name, results: results))
      try AtomicFile.write(data, to: path)
      print("wrote \(path)")
    }
  }
}

/// One measured op.
struct BenchResult: Codable {
  var op: String
  var shape: String
  var secondsPerRun: Double
  /// GFLOP/s for compute-bound ops, else nil.
  var gflops: Double?
  /// GB/s of memory traffic (minimum bytes read + written) for memory-bound ops, else nil.
  var gbps: Double?

  static let header = "op".padding(toLength: 26, withPad: " ", startingAt: 0)
    + "shape".padding(toLength: 34, withPad: " ", startingAt: 0) + "ms/run      throughput"

  var row: String {
    let rate = gflops.map { String(format: "%8.1f GFLOP/s", $0) } ?? gbps.map { String(format: "%8.2f GB/s", $0) } ?? ""
    return op.padding(toLength: 26, withPad: " ", startingAt: 0)
      + shape.padding(toLength: 34, withPad: " ", startingAt: 0)
      + String(format: "%9.3f  ", secondsPerRun * 1000) + rate
  }
}

struct BenchReport: Codable {
  var backend: String
  var results: [BenchResult]
}

extension JSONEncoder {
  static var pretty: JSONEncoder {
    let e = JSONEncoder(); e.outputFormatting = [.prettyPrinted, .sortedKeys]; return e
  }
}

/// Writes a file through a temporary sibling and a rename, so a failed write never leaves a
/// half-written file in place of a good one.
enum AtomicFile {
  static func write(_ data: Data, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let tmp = url.deletingLastPathComponent()
      .appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
    do {
      try data.write(to: tmp)
      if rename(tmp.path, url.path) != 0 {
        throw VKFError.other("cannot rename \(tmp.path) to \(path): \(String(cString: strerror(errno)))")
      }
    } catch {
      try? FileManager.default.removeItem(at: tmp)
      throw VKFError.other("cannot write \(path): \(error.localizedDescription)")
    }
  }
}
