/// Parses lexer chunks into statement trees (`{% %}` structure) and expressions, following
/// jinja2's grammar and operator precedence (`parser.py`): or < and < not < comparisons
/// < `+ -` < `~` < `* / // %` < `**` < unary < postfix, filters and tests.
struct JinjaParser {
  private let chunks: [JinjaChunk]
  private var index = 0
  // Current tag's tokens while parsing an expression.
  private var tokens: [JinjaToken] = []
  private var pos = 0
  private var tagLine = 1
  /// Blocks and expressions open around the current position (`JinjaLimits.nesting`).
  private var depth = 0

  init(chunks: [JinjaChunk]) { self.chunks = chunks }

  /// The whole template.
  mutating func parseTemplate() throws -> [JinjaNode] {
    let (body, end) = try parseBody(until: [], openedAt: line)
    if let end { throw ChatTemplateError.syntax("unexpected '{% \(end) %}'", line: tagLine) }
    return body
  }

  // MARK: - Statements

  /// Nodes up to one of `until` (returned, with its tag's tokens loaded) or the end.
  private mutating func parseBody(until: Set<String>, openedAt: Int = 0) throws -> ([JinjaNode], String?) {
    try enter()
    defer { depth -= 1 }
    var nodes: [JinjaNode] = []
    while index < chunks.count {
      let chunk = chunks[index]; index += 1
      switch chunk {
      case let .text(t): nodes.append(JinjaNode(kind: .text(t), line: tagLine))
      case let .output(toks, line):
        try load(toks, line)
        let e = try parseExpression()
        try expectEnd()
        nodes.append(JinjaNode(kind: .output(e), line: line))
      case let .statement(toks, line):
        try load(toks, line)
        guard case let .name(keyword)? = peek?.kind else {
          throw ChatTemplateError.syntax("expected a statement name after '{%'", line: line)
        }
        if until.contains(keyword) { pos += 1; return (nodes, keyword) }
        pos += 1
        nodes.append(JinjaNode(kind: try parseStatement(keyword, until: until), line: line))
      }
    }
    if !until.isEmpty {
      let wanted = until.sorted().map { "'{% \($0) %}'" }.joined(separator: " or ")
      throw ChatTemplateError.syntax("unexpected end of template, expected \(wanted) to close the block opened here",
                                     line: openedAt)
    }
    return (nodes, nil)
  }

  private mutating func parseStatement(_ keyword: String, until: Set<String>) throws -> JinjaNode.Kind {
    let line = tagLine
    switch keyword {
    case "if":
      var branches: [(JinjaExpr, [JinjaNode])] = []
      var condition = try parseExpression()
      try expectEnd()
      while true {
        let (body, end) = try parseBody(until: ["elif", "else", "endif"], openedAt: line)
        branches.append((condition, body))
        switch end {
        case "elif": condition = try parseExpression(); try expectEnd()
        case "else":
          try expectEnd()
          let (otherwise, _) = try parseBody(until: ["endif"], openedAt: line)
          try expectEnd()
          return .ifChain(branches, otherwise: otherwise)
        default: try expectEnd(); return .ifChain(branches, otherwise: [])
        }
      }
    case "for":
      let target = try parseTarget(allowAttribute: false)
      try expectName("in")
      let iterable = try parseExpression(allowConditional: false)
      var condition: JinjaExpr?
      if acceptName("if") { condition = try parseExpression() }
      if acceptName("recursive") { throw ChatTemplateError.syntax("recursive for loops are not supported", line: line) }
      try expectEnd()
      let (body, end) = try parseBody(until: ["else", "endfor"], openedAt: line)
      var otherwise: [JinjaNode] = []
      if end == "else" { try expectEnd(); (otherwise, _) = try parseBody(until: ["endfor"], openedAt: line) }
      try expectEnd()
      return .forLoop(target: target, iterable: iterable, condition: condition, body: body, otherwise: otherwise)
    case "set":
      let target = try parseTarget(allowAttribute: true)
      if acceptOp("=") {
        var value = try parseExpression()
        if acceptOp(",") {  // `set x = a, b` builds a tuple
          var items = [value]
          repeat { items.append(try parseExpression()) } while acceptOp(",")
          value = .list(items)
        }
        try expectEnd()
        return .set(target, value)
      }
      guard case let .names(names) = target, names.count == 1 else {
        throw ChatTemplateError.syntax("expected '=' after the set target", line: line)
      }
      let filters = try parseFilterChain()
      try expectEnd()
      let (body, _) = try parseBody(until: ["endset"], openedAt: line)
      try expectEnd()
      return .setBlock(names[0], body: body, filters: filters)
    case "macro":
      let name = try expectIdentifier()
      try expectOp("(")
      var parameters: [(String, JinjaExpr?)] = []
      while !acceptOp(")") {
        if !parameters.isEmpty { try expectOp(",") }
        if acceptOp(")") { break }
        let p = try expectIdentifier()
        parameters.append((p, acceptOp("=") ? try parseExpression() : nil))
      }
      try expectEnd()
      let (body, _) = try parseBody(until: ["endmacro"], openedAt: line)
      try expectEnd()
      return .macro(name: name, parameters: parameters, body: body)
    case "filter":
      let filters = try parseFilterChain(leadingBar: false)
      try expectEnd()
      let (body, _) = try parseBody(until: ["endfilter"], openedAt: line)
      try expectEnd()
      return .filterBlock(filters, body: body)
    case "generation":
      try expectEnd()
      let (body, _) = try parseBody(until: ["endgeneration"], openedAt: line)
      try expectEnd()
      return .block(body)
    case "break": try expectEnd(); return .breakLoop
    case "continue": try expectEnd(); return .continueLoop
    default:
      throw ChatTemplateError.syntax("unknown or unsupported tag '\(keyword)'", line: line)
    }
  }

  private mutating func parseTarget(allowAttribute: Bool) throws -> JinjaTarget {
    let parenthesized = acceptOp("(")
    let first = try expectIdentifier()
    if allowAttribute, !parenthesized, acceptOp(".") { return .attribute(first, try expectIdentifier()) }
    var names = [first]
    while acceptOp(",") { names.append(try expectIdentifier()) }
    if parenthesized { try expectOp(")") }
    return .names(names)
  }

  /// `| name(args) | name …` (for `{% set x | f %}` and `{% filter f %}`).
  private mutating func parseFilterChain(leadingBar: Bool = true) throws -> [(String, JinjaArguments)] {
    var filters: [(String, JinjaArguments)] = []
    var first = true
    while (first && !leadingBar) || acceptOp("|") {
      first = false
      let name = try dottedName()
      filters.append((name, peekOp("(") ? try parseCallArguments() : JinjaArguments()))
    }
    return filters
  }

  // MARK: - Token helpers

  private mutating func load(_ toks: [JinjaToken], _ line: Int) throws {
    tokens = toks; pos = 0; tagLine = line
    guard toks.count <= JinjaLimits.tagTokens else {
      throw ChatTemplateError.syntax("a tag of \(toks.count) tokens (at most \(JinjaLimits.tagTokens))", line: line)
    }
  }
  private var peek: JinjaToken? { pos < tokens.count ? tokens[pos] : nil }
  private func peekOp(_ op: String) -> Bool { peek?.kind == .op(op) }
  private func peekName(_ n: String) -> Bool { peek?.kind == .name(n) }
  private mutating func acceptOp(_ op: String) -> Bool { if peekOp(op) { pos += 1; return true }; return false }
  private mutating func acceptName(_ n: String) -> Bool { if peekName(n) { pos += 1; return true }; return false }
  private var line: Int { peek?.line ?? tagLine }

  private func describe(_ t: JinjaToken?) -> String {
    guard let t else { return "end of tag" }
    switch t.kind {
    case let .name(n): return "'\(n)'"
    case let .string(s): return "string '\(s)'"
    case let .int(i): return "\(i)"
    case let .float(f): return "\(f)"
    case let .op(o): return "'\(o)'"
    }
  }
  private func unexpected(_ wanted: String) -> ChatTemplateError {
    .syntax("expected \(wanted), got \(describe(peek))", line: line)
  }
  private mutating func expectOp(_ op: String) throws { guard acceptOp(op) else { throw unexpected("'\(op)'") } }
  private mutating func expectName(_ n: String) throws { guard acceptName(n) else { throw unexpected("'\(n)'") } }
  private mutating func expectEnd() throws { if peek != nil { throw unexpected("end of tag") } }
  private mutating func expectIdentifier() throws -> String {
    guard case let .name(n)? = peek?.kind else { throw unexpected("a name") }
    pos += 1; return n
  }
  private mutating func dottedName() throws -> String {
    var n = try expectIdentifier()
    while acceptOp(".") { n += "." + (try expectIdentifier()) }
    return n
  }

  // MARK: - Expressions

  /// One level deeper; past `JinjaLimits.nesting` the template is refused.
  private mutating func enter() throws {
    depth += 1
    guard depth <= JinjaLimits.nesting else {
      throw ChatTemplateError.syntax("blocks or expressions nested more than \(JinjaLimits.nesting) deep", line: tagLine)
    }
  }

  mutating func parseExpression(allowConditional: Bool = true) throws -> JinjaExpr {
    try enter()
    defer { depth -= 1 }
    let e = try parseOr()
    guard allowConditional, acceptName("if") else { return e }
    let condition = try parseOr()
    let otherwise = acceptName("else") ? try parseExpression() : nil
    return .conditional(condition: condition, then: e, otherwise: otherwise)
  }

  private mutating func parseOr() throws -> JinjaExpr {
    var e = try parseAnd()
    while acceptName("or") { e = .or(e, try parseAnd()) }
    return e
  }

  private mutating func parseAnd() throws -> JinjaExpr {
    var e = try parseNot()
    while acceptName("and") { e = .and(e, try parseNot()) }
    return e
  }

  private mutating func parseNot() throws -> JinjaExpr {
    if acceptName("not") {
      try enter()
      defer { depth -= 1 }
      return .not(try parseNot())
    }
    return try parseCompare()
  }

  private mutating func parseCompare() throws -> JinjaExpr {
    let first = try parseMath1()
    var ops: [(String, JinjaExpr)] = []
    while true {
      if case let .op(o)? = peek?.kind, ["==", "!=", "<", "<=", ">", ">="].contains(o) {
        pos += 1; ops.append((o, try parseMath1()))
      } else if acceptName("in") {
        ops.append(("in", try parseMath1()))
      } else if peekName("not"), pos + 1 < tokens.count, tokens[pos + 1].kind == .name("in") {
        pos += 2; ops.append(("notin", try parseMath1()))
      } else { break }
    }
    return ops.isEmpty ? first : .compare(first, ops)
  }

  private mutating func parseMath1() throws -> JinjaExpr {
    var e = try parseConcat()
    while case let .op(o)? = peek?.kind, o == "+" || o == "-" { pos += 1; e = .binary(o, e, try parseConcat()) }
    return e
  }

  private mutating func parseConcat() throws -> JinjaExpr {
    var e = try parseMath2()
    while acceptOp("~") { e = .binary("~", e, try parseMath2()) }
    return e
  }

  private mutating func parseMath2() throws -> JinjaExpr {
    var e = try parsePow()
    while case let .op(o)? = peek?.kind, ["*", "/", "//", "%"].contains(o) {
      pos += 1; e = .binary(o, e, try parsePow())
    }
    return e
  }

  private mutating func parsePow() throws -> JinjaExpr {
    var e = try parseUnary()
    while acceptOp("**") { e = .binary("**", e, try parseUnary()) }
    return e
  }

  private mutating func parseUnary(withFilter: Bool = true) throws -> JinjaExpr {
    try enter()
    defer { depth -= 1 }
    var e: JinjaExpr
    if acceptOp("-") { e = .negate(try parseUnary(withFilter: false)) }
    else if acceptOp("+") { e = try parseUnary(withFilter: false) }
    else { e = try parsePostfix(try parsePrimary()) }
    if withFilter { e = try parseFilterExpression(e) }
    return e
  }

  private mutating func parsePrimary() throws -> JinjaExpr {
    guard let t = peek else { throw unexpected("an expression") }
    pos += 1
    switch t.kind {
    case let .name(n):
      switch n {
      case "true", "True": return .literal(.bool(true))
      case "false", "False": return .literal(.bool(false))
      case "none", "None": return .literal(.none)
      default: return .name(n)
      }
    case var .string(s):
      while case let .string(more)? = peek?.kind { s += more; pos += 1 }  // implicit concatenation
      return .literal(.string(s))
    case let .int(i): return .literal(.int(i))
    case let .float(f): return .literal(.double(f))
    case .op("("):
      if acceptOp(")") { return .list([]) }
      let e = try parseExpression()
      if acceptOp(",") {
        var items = [e]
        while !peekOp(")") { items.append(try parseExpression()); if !acceptOp(",") { break } }
        try expectOp(")")
        return .list(items)
      }
      try expectOp(")")
      return e
    case .op("["):
      var items: [JinjaExpr] = []
      while !acceptOp("]") {
        if !items.isEmpty { try expectOp(","); if acceptOp("]") { break } }
        items.append(try parseExpression())
      }
      return .list(items)
    case .op("{"):
      var pairs: [(JinjaExpr, JinjaExpr)] = []
      while !acceptOp("}") {
        if !pairs.isEmpty { try expectOp(","); if acceptOp("}") { break } }
        let k = try parseExpression()
        try expectOp(":")
        pairs.append((k, try parseExpression()))
      }
      return .dict(pairs)
    default:
      pos -= 1
      throw unexpected("an expression")
    }
  }

  private mutating func parsePostfix(_ base: JinjaExpr) throws -> JinjaExpr {
    var e = base
    while true {
      if acceptOp(".") {
        guard let t = peek else { throw unexpected("an attribute name") }
        pos += 1
        switch t.kind {
        case let .name(n): e = .attribute(e, n)
        case let .int(i): e = .item(e, .literal(.int(i)))
        default: pos -= 1; throw unexpected("an attribute name")
        }
      } else if acceptOp("[") {
        e = try parseSubscript(e)
      } else if peekOp("(") {
        e = .call(e, try parseCallArguments())
      } else { return e }
    }
  }

  private mutating func parseSubscript(_ base: JinjaExpr) throws -> JinjaExpr {
    var parts: [JinjaExpr?] = []
    var current: JinjaExpr? = nil
    var sawColon = false
    while !acceptOp("]") {
      if acceptOp(":") { parts.append(current); current = nil; sawColon = true; continue }
      current = try parseExpression()
    }
    guard sawColon else {
      guard let index = current else { throw unexpected("a subscript") }
      return .item(base, index)
    }
    parts.append(current)
    while parts.count < 3 { parts.append(nil) }
    return .slice(base, start: parts[0], stop: parts[1], step: parts[2])
  }

  private mutating func parseCallArguments() throws -> JinjaArguments {
    try expectOp("(")
    var args = JinjaArguments()
    while !acceptOp(")") {
      if !args.positional.isEmpty || !args.keyword.isEmpty { try expectOp(","); if acceptOp(")") { break } }
      if case let .name(n)? = peek?.kind, pos + 1 < tokens.count, tokens[pos + 1].kind == .op("=") {
        pos += 2
        args.keyword.append((n, try parseExpression()))
      } else {
        args.positional.append(try parseExpression())
      }
    }
    return args
  }

  private mutating func parseFilterExpression(_ base: JinjaExpr) throws -> JinjaExpr {
    var e = base
    while true {
      if acceptOp("|") {
        let name = try dottedName()
        let args = peekOp("(") ? try parseCallArguments() : JinjaArguments()
        e = try parsePostfix(.filter(e, name: name, args))
      } else if acceptName("is") {
        let negated = acceptName("not")
        let name = try dottedName()
        var args = JinjaArguments()
        if peekOp("(") {
          args = try parseCallArguments()
        } else if let t = peek, !["else", "or", "and", "if", "is", "in", "not"].contains(where: { t.kind == .name($0) }) {
          switch t.kind {
          case .name, .string, .int, .float, .op("("), .op("["), .op("{"):
            args.positional = [try parsePostfix(try parsePrimary())]
          default: break
          }
        }
        e = .test(e, name: name, args, negated: negated)
      } else { return e }
    }
  }
}
