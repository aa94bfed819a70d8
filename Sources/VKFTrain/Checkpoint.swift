// Checkpoints: everything a run needs to continue bitwise, written all-or-nothing.
import Foundation
import VKFCore
import VKFModel
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `trainer_state.json` of a checkpoint: the counters that, with the tensors, make a resumed
/// run continue exactly where the saved one was.
struct TrainerState: Codable, Equatable {
  var step: Int
  var optimizerStep: Int
  var schedulerStep: Int
  var rngState: UInt64
  var cursor: DataCursor
  var configHash: String
  var trainables: [String]
  var bestStep: Int?
  var bestLoss: Double?
  var bestTokens: Int?
  var evaluationsWithoutImprovement: Int
  var hasBestTrainables: Bool
  /// fp16's loss scaler (`GradScaler.state`: scale, growth tracker); nil otherwise.
  var lossScaler: [Double]? = nil

  enum CodingKeys: String, CodingKey {
    case step, optimizerStep = "optimizer_step", schedulerStep = "scheduler_step", rngState = "rng_state"
    case cursor = "data_cursor", configHash = "config_hash", trainables
    case bestStep = "best_step", bestLoss = "best_eval_loss", bestTokens = "best_eval_tokens"
    case evaluationsWithoutImprovement = "evaluations_without_improvement"
    case hasBestTrainables = "has_best_trainables"
    case lossScaler = "loss_scaler"
  }
}

/// Layout of a checkpoint directory `checkpoint-<step>/`.
public enum CheckpointLayout {
  /// Trainable tensors by `TrainableTensor.name` (f32).
  public static let trainables = "trainables.safetensors"
  /// AdamW moments: `<name>.exp_avg`, `<name>.exp_avg_sq`.
  public static let optimizer = "optimizer.safetensors"
  /// The best evaluation's trainables (only with early stopping).
  public static let best = "best_trainables.safetensors"
  /// Counters, cursor, RNG state and config hash (`TrainerState`).
  public static let state = "trainer_state.json"
  /// Directory name prefix; a `.tmp` suffix marks one being written.
  public static let prefix = "checkpoint-"

  /// The trainer's logs beside the checkpoints (metrics lines and the loss curve), which a
  /// resumed run continues.
  public static let logFiles = [TrainingLog.metricsFile, TrainingLog.curveFile]

  /// Complete checkpoints in `directory` (`checkpoint-<step>`, no `.tmp`), newest first.
  public static func checkpoints(in directory: URL) -> [(step: Int, url: URL)] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
    return names.compactMap { name -> (Int, URL)? in
      guard name.hasPrefix(prefix), let step = Int(name.dropFirst(prefix.count)), step >= 0 else { return nil }
      let url = directory.appendingPathComponent(name)
      var isDir: ObjCBool = false
      guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue else { return nil }
      return (step, url)
    }.sorted { $0.0 > $1.0 }
  }
}

extension Trainer {
  // MARK: - Saving

  /// Writes `checkpoint-<step>/` in the output directory: files go into
  /// `checkpoint-<step>.tmp/`, each fsynced, then the directory is fsynced and renamed, so a
  /// crash leaves either the complete checkpoint or a `.tmp` that resuming ignores. Then
  /// deletes the oldest checkpoints beyond `saveTotalLimit`.
  @discardableResult
  public func saveCheckpoint() throws -> URL {
    guard let dir = outputDirectory else {
      throw TrainingError.checkpoint(path: "", detail: "no output directory to save checkpoints in")
    }
    let name = CheckpointLayout.prefix + String(step)
    let final = dir.appendingPathComponent(name), tmp = dir.appendingPathComponent(name + ".tmp")
    let fm = FileManager.default
    try? fm.removeItem(at: tmp)
    do {
      try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
      var trainables: [String: ([Int], [Float])] = [:]
      for t in task.trainableTensors { trainables[t.name] = (t.value.shape, try task.backend.floats(t.value)) }
      try SafetensorsWriter.write(floats: trainables, to: tmp.appendingPathComponent(CheckpointLayout.trainables))
      try checkpointFileWritten?(CheckpointLayout.trainables)
      try SafetensorsWriter.write(floats: try optimizer.stateValues(),
                                  metadata: ["optimizer": "adamw", "step": String(optimizer.step)],
                                  to: tmp.appendingPathComponent(CheckpointLayout.optimizer))
      try checkpointFileWritten?(CheckpointLayout.optimizer)
      if let best = bestTrainables {
        let shaped = Dictionary(uniqueKeysWithValues: task.trainableTensors.compactMap { t in
          best[t.name].map { (t.name, (t.value.shape, $0)) } })
        try SafetensorsWriter.write(floats: shaped, to: tmp.appendingPathComponent(CheckpointLayout.best))
        try checkpointFileWritten?(CheckpointLayout.best)
      }
      let state = TrainerState(step: step, optimizerStep: optimizer.step, schedulerStep: step, rngState: rngState,
                               cursor: cursor, configHash: config.fingerprint,
                               trainables: task.trainableTensors.map(\.name), bestStep: bestEvaluation?.step,
                               bestLoss: bestEvaluation?.loss, bestTokens: bestEvaluation?.tokens,
                               evaluationsWithoutImprovement: evaluationsWithoutImprovement,
                               hasBestTrainables: bestTrainables != nil, lossScaler: gradScaler?.state)
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
      try AtomicWrite.write(Array(try encoder.encode(state)), to: tmp.appendingPathComponent(CheckpointLayout.state))
      try checkpointFileWritten?(CheckpointLayout.state)
      try Self.fsyncDirectory(tmp)
      if fm.fileExists(atPath: final.path) { try fm.removeItem(at: final) }
      guard rename(tmp.path, final.path) == 0 else {
        throw TrainingError.checkpoint(path: final.path, detail: "renaming \(tmp.lastPathComponent) failed: "
          + String(cString: strerror(errno)))
      }
      try Self.fsyncDirectory(dir)
    } catch {
      try? fm.removeItem(at: tmp)
      throw error
    }
    lastCheckpoint = final
    if config.saveTotalLimit > 0 {
      for old in CheckpointLayout.checkpoints(in: dir).dropFirst(config.saveTotalLimit) where old.url != final {
        try? fm.removeItem(at: old.url)
      }
    }
    onEvent?(.checkpointSaved(final))
    return final
  }

  static func fsyncDirectory(_ url: URL) throws {
    let fd = open(url.path, O_RDONLY)
    guard fd >= 0 else {
      throw TrainingError.checkpoint(path: url.path, detail: "cannot open the directory to flush it")
    }
    defer { close(fd) }
    guard fsync(fd) == 0 else {
      throw TrainingError.checkpoint(path: url.path, detail: "fsync failed: " + String(cString: strerror(errno)))
    }
  }

  // MARK: - Resuming

  /// Loads a checkpoint and continues from it on the next `train()`. `url` is a checkpoint
  /// directory (used as is; any problem throws) or an output directory: then the newest
  /// complete checkpoint that loads is used, `*.tmp` leftovers and unreadable ones are
  /// skipped (reported as `.checkpointSkipped`). Returns the checkpoint used.
  @discardableResult
  public func resume(from url: URL) throws -> URL {
    let fm = FileManager.default
    if fm.fileExists(atPath: url.appendingPathComponent(CheckpointLayout.state).path) {
      try load(url)
      return url
    }
    let candidates = CheckpointLayout.checkpoints(in: url)
    guard !candidates.isEmpty else {
      throw TrainingError.checkpoint(path: url.path, detail: "no complete checkpoint-<step> directory here; "
        + "pass a checkpoint directory or the output directory of an earlier run")
    }
    var reasons: [String] = []
    for c in candidates {
      do {
        try load(c.url)
        return c.url
      } catch {
        reasons.append("\(c.url.lastPathComponent): \(error)")
        onEvent?(.checkpointSkipped(c.url, reason: "\(error)"))
      }
    }
    throw TrainingError.checkpoint(path: url.path, detail: "no checkpoint could be loaded: " + reasons.joined(separator: "; "))
  }

  /// Reads and checks every file first, then applies them: a bad checkpoint changes nothing.
  private func load(_ dir: URL) throws {
    let path = dir.path
    func fail(_ d: String) -> TrainingError { .checkpoint(path: path, detail: d) }
    let stateURL = dir.appendingPathComponent(CheckpointLayout.state)
    guard FileManager.default.fileExists(atPath: stateURL.path) else { throw fail("missing \(CheckpointLayout.state)") }
    let data: Data
    do { data = try BoundedFile.read(stateURL, BoundedFile.settings) } catch {
      throw fail("\(CheckpointLayout.state) is unreadable: \(error.localizedDescription)")
    }
    let state: TrainerState
    do { state = try JSONDecoder().decode(TrainerState.self, from: data) } catch {
      throw fail("\(CheckpointLayout.state) is unreadable: \(error)")
    }
    guard state.configHash == config.fingerprint else {
      throw fail("was saved with other training settings (config hash \(state.configHash), now \(config.fingerprint)); "
        + "resume with the original config or start a new output directory")
    }
    let names = task.trainableTensors.map(\.name)
    guard state.trainables == names else {
      throw fail("trains other tensors (\(state.trainables.count) saved, \(names.count) now); check the adapter settings")
    }
    guard state.step >= 0, state.step <= totalSteps else { throw fail("step \(state.step) is outside 0…\(totalSteps)") }
    func floats(_ file: String) throws -> [String: [Float]] {
      do {
        let f = try SafetensorsFile(contentsOf: dir.appendingPathComponent(file))
        var out: [String: [Float]] = [:]
        for n in f.tensorNames { out[n] = try f.floats(n) }
        return out
      } catch { throw fail("\(file) is unreadable: \(error)") }
    }
    let trainables = try floats(CheckpointLayout.trainables)
    let moments = try floats(CheckpointLayout.optimizer)
    let best = state.hasBestTrainables ? try floats(CheckpointLayout.best) : nil
    for t in task.trainableTensors {
      for (file, values) in [(CheckpointLayout.trainables, trainables[t.name]), (CheckpointLayout.best, best.map { $0[t.name] } ?? [Float]()),
                             (CheckpointLayout.optimizer, moments[AdamW.firstMomentKey(t.name)]),
                             (CheckpointLayout.optimizer, moments[AdamW.secondMomentKey(t.name)])] {
        guard let values, values.count == t.count || (file == CheckpointLayout.best && best == nil) else {
          throw fail("\(file) lacks \(t.name) or has the wrong size for it")
        }
      }
    }
    // Everything checked: apply.
    try restore(trainables)
    try optimizer.loadState(step: state.optimizerStep, values: moments)
    step = state.step
    cursor = state.cursor
    rngState = state.rngState
    if let saved = state.lossScaler { gradScaler?.restore(saved) }
    evaluationsWithoutImprovement = state.evaluationsWithoutImprovement
    bestTrainables = best
    if let s = state.bestStep, let l = state.bestLoss {
      bestEvaluation = EvaluationResult(step: s, loss: l, perplexity: exp(l), tokens: state.bestTokens ?? 0, isBest: true)
    } else {
      bestEvaluation = nil
    }
    lastCheckpoint = dir
    try log?.truncate(after: step)
    onEvent?(.resumed(dir, step: step))
  }
}
