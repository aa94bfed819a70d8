// metrics.jsonl (one JSON object per logged or evaluated step) and loss-curve.svg beside it.
import Foundation
import VKFModel

/// Appends metrics lines to `<dir>/metrics.jsonl` and redraws `<dir>/loss-curve.svg`
/// (atomically) from them.
///
/// Line keys: progress `{"step", "epoch", "loss", "learning_rate", "grad_norm",
/// "tokens_per_second", "elapsed_s"}`; evaluation `{"step", "eval_loss", "eval_perplexity",
/// "eval_tokens"}`. Non-finite numbers are written as null (JSON has no NaN).
final class TrainingLog {
  let metricsURL: URL
  let curveURL: URL
  /// (step, loss) of every progress and evaluation line, for the curve.
  private(set) var trainPoints: [(Int, Double)] = []
  private(set) var evalPoints: [(Int, Double)] = []
  /// (step, mean reward) of progress and evaluation lines that log one (GRPO's reward, PPO's
  /// objective/scores), for a second panel.
  private(set) var rewardPoints: [(Int, Double)] = []
  private(set) var evalRewardPoints: [(Int, Double)] = []

  /// File names inside the output directory.
  static let metricsFile = "metrics.jsonl", curveFile = "loss-curve.svg"

  init(directory: URL) {
    metricsURL = directory.appendingPathComponent(Self.metricsFile)
    curveURL = directory.appendingPathComponent(Self.curveFile)
  }

  func append(_ p: TrainingProgress) throws {
    trainPoints.append((p.step, p.loss))
    if let r = p.extra["reward"] ?? p.extra["objective/scores"] { rewardPoints.append((p.step, r)) }
    try appendLine([("step", "\(p.step)"), ("epoch", Self.number(p.epoch)), ("loss", Self.number(p.loss)),
                    ("learning_rate", Self.number(Double(p.learningRate))), ("grad_norm", Self.number(Double(p.gradNorm))),
                    ("tokens_per_second", Self.number(p.tokensPerSecond)), ("elapsed_s", Self.number(p.elapsedSeconds))]
                   + Self.extraFields(p.extra, prefix: ""))
  }

  func append(_ r: EvaluationResult) throws {
    evalPoints.append((r.step, r.loss))
    if let v = r.extra["reward"] ?? r.extra["objective/scores"] { evalRewardPoints.append((r.step, v)) }
    try appendLine([("step", "\(r.step)"), ("eval_loss", Self.number(r.loss)),
                    ("eval_perplexity", Self.number(r.perplexity)), ("eval_tokens", "\(r.tokens)")]
                   + Self.extraFields(r.extra, prefix: "eval_"))
  }

  /// Keeps only lines up to `step` (a resumed run replaces what the interrupted one logged
  /// after its checkpoint) and reloads the curve points from them.
  func truncate(after step: Int) throws {
    trainPoints = []; evalPoints = []; rewardPoints = []; evalRewardPoints = []
    guard let data = FileManager.default.contents(atPath: metricsURL.path) else { return }
    var kept: [String] = []
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
      guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
            let s = obj["step"] as? Int, s <= step else { continue }
      kept.append(String(line))
      if let l = obj["loss"] as? Double { trainPoints.append((s, l)) }
      if let l = obj["eval_loss"] as? Double { evalPoints.append((s, l)) }
      if let r = obj["reward"] as? Double ?? obj["objective/scores"] as? Double { rewardPoints.append((s, r)) }
      if let r = obj["eval_reward"] as? Double ?? obj["eval_objective/scores"] as? Double { evalRewardPoints.append((s, r)) }
    }
    try AtomicWrite.write(Array(kept.map { $0 + "\n" }.joined().utf8), to: metricsURL)
  }

  /// Task metrics as JSON fields ("rewards/chosen" → "eval_rewards/chosen" for evaluations);
  /// keys are the tasks' own plain names (no quotes or backslashes).
  static func extraFields(_ extra: [String: Double], prefix: String) -> [(String, String)] {
    extra.keys.sorted().filter { $0 != "loss" }.map { (prefix + $0, number(extra[$0] ?? .nan)) }
  }

  private func appendLine(_ fields: [(String, String)]) throws {
    let line = "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}\n"
    if !FileManager.default.fileExists(atPath: metricsURL.path) {
      guard FileManager.default.createFile(atPath: metricsURL.path, contents: nil) else {
        throw ModelFileError(metricsURL.path, "cannot create the metrics file; check that the output directory is writable")
      }
    }
    do {
      let h = try FileHandle(forWritingTo: metricsURL)
      defer { try? h.close() }
      try h.seekToEnd()
      try h.write(contentsOf: Data(line.utf8))
    } catch {
      throw ModelFileError(metricsURL.path, "cannot append to the metrics file: \(error)")
    }
  }

  /// A JSON number, or null when not finite.
  static func number(_ x: Double) -> String {
    guard x.isFinite else { return "null" }
    return "\(x)"
  }

  /// Redraws the SVG: training loss as a line, evaluation loss as dots, step on x; below it
  /// the mean reward the same way when the run logs one (GRPO).
  func writeCurve() throws {
    let rewards = rewardPoints.isEmpty && evalRewardPoints.isEmpty ? nil : (rewardPoints, evalRewardPoints)
    try AtomicWrite.write(Array(LossCurve.svg(train: trainPoints, eval: evalPoints, rewards: rewards).utf8), to: curveURL)
  }
}

/// A dependency-free SVG line chart of loss against step.
enum LossCurve {
  /// The loss panel, and a mean-reward panel under it when `rewards` (train, eval) is given.
  static func svg(train: [(Int, Double)], eval: [(Int, Double)],
                  rewards: ([(Int, Double)], [(Int, Double)])? = nil) -> String {
    let panel = 360.0, w = 640.0, h = rewards == nil ? panel : 2 * panel
    var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" "
      + "viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"11\">\n"
    out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    out += chart(train: train, eval: eval, names: ("train", "eval", "train loss", "eval loss"), offset: 0)
    if let (r, e) = rewards {
      out += chart(train: r, eval: e, names: ("reward", "eval-reward", "mean reward", "eval mean reward"), offset: panel)
    }
    return out + "</svg>\n"
  }

  /// One 640 × 360 chart `offset` pixels down: `train` as a line, `eval` as dots; `names`:
  /// the line's id, the dots' class, and their legends.
  static func chart(train: [(Int, Double)], eval: [(Int, Double)], names: (String, String, String, String),
                    offset: Double) -> String {
    let w = 640.0, h = 360.0 + offset, left = 60.0, right = 20.0, top = 20.0 + offset, bottom = 40.0
    let all = (train + eval).filter { $0.1.isFinite }
    let maxStep = Double(max(all.map(\.0).max() ?? 1, 1))
    var lo = all.map(\.1).min() ?? 0, hi = all.map(\.1).max() ?? 1
    if hi - lo < 1e-9 { lo -= 0.5; hi += 0.5 }
    func x(_ s: Int) -> Double { left + Double(s) / maxStep * (w - left - right) }
    func y(_ l: Double) -> Double { top + (hi - l) / (hi - lo) * (h - top - bottom) }
    func f(_ v: Double) -> String { String(format: "%.1f", v) }
    var out = "<line x1=\"\(f(left))\" y1=\"\(f(h - bottom))\" x2=\"\(f(w - right))\" y2=\"\(f(h - bottom))\" stroke=\"black\"/>\n"
    out += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(h - bottom))\" stroke=\"black\"/>\n"
    out += "<text x=\"\(f(left))\" y=\"\(f(h - 10))\">step 0</text>\n"
    out += "<text x=\"\(f(w - right))\" y=\"\(f(h - 10))\" text-anchor=\"end\">step \(Int(maxStep))</text>\n"
    out += "<text x=\"\(f(left - 4))\" y=\"\(f(top + 4))\" text-anchor=\"end\">\(String(format: "%.3f", hi))</text>\n"
    out += "<text x=\"\(f(left - 4))\" y=\"\(f(h - bottom))\" text-anchor=\"end\">\(String(format: "%.3f", lo))</text>\n"
    let points = train.filter { $0.1.isFinite }.map { "\(f(x($0.0))),\(f(y($0.1)))" }.joined(separator: " ")
    if !points.isEmpty {
      out += "<polyline id=\"\(names.0)\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"\(points)\"/>\n"
    }
    for (s, l) in eval where l.isFinite {
      out += "<circle class=\"\(names.1)\" cx=\"\(f(x(s)))\" cy=\"\(f(y(l)))\" r=\"3\" fill=\"#d62728\"/>\n"
    }
    out += "<text x=\"\(f(w - right))\" y=\"\(f(top + 4))\" text-anchor=\"end\" fill=\"#1f77b4\">\(names.2)</text>\n"
    if !eval.isEmpty {
      out += "<text x=\"\(f(w - right))\" y=\"\(f(top + 18))\" text-anchor=\"end\" fill=\"#d62728\">\(names.3)</text>\n"
    }
    return out
  }
}
