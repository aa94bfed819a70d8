/// Expression nodes of the template language.
indirect enum JinjaExpr {
  case literal(JinjaValue)
  case name(String)
  case list([JinjaExpr])
  case dict([(JinjaExpr, JinjaExpr)])
  case attribute(JinjaExpr, String)
  case item(JinjaExpr, JinjaExpr)
  case slice(JinjaExpr, start: JinjaExpr?, stop: JinjaExpr?, step: JinjaExpr?)
  case call(JinjaExpr, JinjaArguments)
  case filter(JinjaExpr, name: String, JinjaArguments)
  case test(JinjaExpr, name: String, JinjaArguments, negated: Bool)
  case not(JinjaExpr)
  case negate(JinjaExpr)
  case binary(String, JinjaExpr, JinjaExpr)
  case and(JinjaExpr, JinjaExpr)
  case or(JinjaExpr, JinjaExpr)
  case compare(JinjaExpr, [(String, JinjaExpr)])
  case conditional(condition: JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
}

/// Call-site arguments: positional, then keyword, in source order.
struct JinjaArguments {
  var positional: [JinjaExpr] = []
  var keyword: [(String, JinjaExpr)] = []
}

/// Where `{% set %}` and `{% for %}` store values.
enum JinjaTarget {
  /// `x` or `a, b` (tuple unpacking).
  case names([String])
  /// `ns.attr` (namespace attribute).
  case attribute(String, String)
}

/// Statement nodes; each carries the source line for error messages.
struct JinjaNode {
  indirect enum Kind {
    case text(String)
    case output(JinjaExpr)
    case ifChain([(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode])
    case forLoop(target: JinjaTarget, iterable: JinjaExpr, condition: JinjaExpr?,
                 body: [JinjaNode], otherwise: [JinjaNode])
    case set(JinjaTarget, JinjaExpr)
    case setBlock(String, body: [JinjaNode], filters: [(String, JinjaArguments)])
    case macro(name: String, parameters: [(String, JinjaExpr?)], body: [JinjaNode])
    case filterBlock([(String, JinjaArguments)], body: [JinjaNode])
    /// `{% generation %}` (transformers' assistant-mask marker) renders its body as-is.
    case block([JinjaNode])
    case breakLoop, continueLoop
  }
  var kind: Kind
  var line: Int
}
