/// Caps that keep a hostile chat template from hanging or crashing the process: templates
/// come with downloaded models, and a template is code. Real templates stay far below every
/// cap (the largest in the fixtures nests 6 blocks deep, its longest tag has ~60 tokens, and a
/// 1,000-turn conversation renders in ~100,000 steps).
enum JinjaLimits {
  /// Tokens in one `{{ }}` / `{% %}` tag: bounds the depth of a left-leaning expression tree
  /// (`1+1+1+…`), which evaluation recurses through.
  static let tagTokens = 1_000
  /// Nested blocks (`if`/`for`/`macro`…) and nested expressions (brackets, `not not …`): the
  /// parser and the interpreter recurse once per level.
  static let nesting = 64
  /// Macro calls in progress at once (a macro calling itself).
  static let callDepth = 64
  /// Statements executed plus expressions evaluated in one render (loops over `range()`
  /// nested in loops): ~0.1 s of work in a release build, 10× what a 1,000-turn conversation needs.
  static let steps = 1_000_000
  /// Characters of one rendered conversation (and of any string built while rendering):
  /// `"x" * 10**9` stops here instead of exhausting memory.
  static let outputBytes = 256 << 20
  /// Characters one repetition (`'-' * 80`, `[x] * n`) may produce: real templates repeat a
  /// separator or an indent; `'x' * 99999999` only burns time (the fuzzer found it at > 1 s).
  static let repeatBytes = 1 << 20
}
