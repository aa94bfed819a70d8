import Foundation

/// Executes a parsed template against a context, with jinja2's scoping: a `for` body is
/// a new scope per iteration (so `set` inside it does not leak, hence `namespace()`),
/// `if` is not, macros see the template's top-level variables plus their arguments.
final class JinjaInterpreter {
  private var scopes: [[String: JinjaValue]]
  private var out = ""
  var line = 1
  /// Statements and expressions run so far (`JinjaLimits.steps`).
  private var steps = 0
  /// Macro calls in progress (`JinjaLimits.callDepth`).
  private var calls = 0

  private enum Flow { case normal, breakLoop, continueLoop }

  init(context: [String: JinjaValue]) { scopes = [context] }

  /// Renders `nodes` to a string.
  func render(_ nodes: [JinjaNode]) throws -> String {
    out = ""
    _ = try execute(nodes)
    return out
  }

  func fail(_ message: String) -> ChatTemplateError { .runtime(message, line: line) }

  // MARK: - Variables

  func lookup(_ name: String) -> JinjaValue {
    for scope in scopes.reversed() { if let v = scope[name] { return v } }
    return JinjaBuiltins.global(name, self) ?? .undefined(name)
  }

  private func assign(_ target: JinjaTarget, _ value: JinjaValue) throws {
    switch target {
    case let .names(names) where names.count == 1:
      scopes[scopes.count - 1][names[0]] = value
    case let .names(names):
      let items = try iterate(value)
      guard items.count == names.count else {
        throw fail("cannot unpack \(items.count) values into \(names.count) names")
      }
      for (n, v) in zip(names, items) { scopes[scopes.count - 1][n] = v }
    case let .attribute(object, attribute):
      guard case let .namespace(ns) = lookup(object) else {
        throw fail("cannot assign attribute '\(attribute)' on '\(object)': only namespace() objects are writable")
      }
      ns[attribute] = value
    }
  }

  // MARK: - Statements

  /// Counts one step of work; past `JinjaLimits.steps` the render stops.
  private func step() throws {
    steps += 1
    guard steps <= JinjaLimits.steps else {
      throw fail("rendering took more than \(JinjaLimits.steps) steps (an endless or enormous loop?)")
    }
  }

  /// Throws when `text` (a string built while rendering) is past `JinjaLimits.outputBytes`.
  func checkSize(_ text: String) throws {
    guard text.utf8.count <= JinjaLimits.outputBytes else {
      throw fail("the rendered text passed \(JinjaLimits.outputBytes >> 20) MiB")
    }
  }

  private func execute(_ nodes: [JinjaNode]) throws -> Flow {
    for node in nodes {
      line = node.line
      try step()
      switch node.kind {
      case let .text(t): out += t; try checkSize(out)
      case let .output(e): out += try evaluate(e).pythonString; try checkSize(out)
      case let .ifChain(branches, otherwise):
        var taken = false
        for (condition, body) in branches where try evaluate(condition).isTruthy {
          taken = true
          let flow = try execute(body)
          if flow != .normal { return flow }
          break
        }
        if !taken { let flow = try execute(otherwise); if flow != .normal { return flow } }
      case let .forLoop(target, iterable, condition, body, otherwise):
        try runLoop(target: target, iterable: iterable, condition: condition, body: body, otherwise: otherwise)
      case let .set(target, e): try assign(target, try evaluate(e))
      case let .setBlock(name, body, filters):
        var value = JinjaValue.string(try capture(body))
        for (f, args) in filters { value = try JinjaBuiltins.filter(f, value, try arguments(args), self) }
        scopes[scopes.count - 1][name] = value
      case let .macro(name, parameters, body):
        scopes[scopes.count - 1][name] = .function(makeMacro(name, parameters, body))
      case let .filterBlock(filters, body):
        var value = JinjaValue.string(try capture(body))
        for (f, args) in filters { value = try JinjaBuiltins.filter(f, value, try arguments(args), self) }
        out += value.pythonString
      case let .block(body):
        let flow = try execute(body); if flow != .normal { return flow }
      case .breakLoop: return .breakLoop
      case .continueLoop: return .continueLoop
      }
    }
    return .normal
  }

  private func capture(_ body: [JinjaNode]) throws -> String {
    let saved = out
    out = ""
    defer { out = saved }
    _ = try execute(body)
    return out
  }

  private func runLoop(target: JinjaTarget, iterable: JinjaExpr, condition: JinjaExpr?,
                       body: [JinjaNode], otherwise: [JinjaNode]) throws {
    let loopLine = line
    var items = try iterate(try evaluate(iterable))
    if let condition {
      // jinja2 filters first, so loop.length/last count only the kept items.
      var kept: [JinjaValue] = []
      for item in items {
        scopes.append([:])
        defer { scopes.removeLast() }
        try assign(target, item)
        if try evaluate(condition).isTruthy { kept.append(item) }
      }
      items = kept
    }
    if items.isEmpty { _ = try execute(otherwise); return }
    let n = items.count
    for (i, item) in items.enumerated() {
      scopes.append([:])
      defer { scopes.removeLast() }
      line = loopLine
      var loop = JinjaObject([
        ("index", .int(i + 1)), ("index0", .int(i)), ("revindex", .int(n - i)), ("revindex0", .int(n - i - 1)),
        ("first", .bool(i == 0)), ("last", .bool(i == n - 1)), ("length", .int(n)),
        ("depth", .int(1)), ("depth0", .int(0)),
        ("previtem", i > 0 ? items[i - 1] : .undefined("previtem")),
        ("nextitem", i + 1 < n ? items[i + 1] : .undefined("nextitem")),
      ])
      loop["cycle"] = .function(JinjaFunction("loop.cycle") { args, _ in
        args.isEmpty ? .undefined("cycle") : args[i % args.count]
      })
      scopes[scopes.count - 1]["loop"] = .object(loop)
      try assign(target, item)
      if try execute(body) == .breakLoop { break }
    }
  }

  private func makeMacro(_ name: String, _ parameters: [(String, JinjaExpr?)],
                         _ body: [JinjaNode]) -> JinjaFunction {
    JinjaFunction(name) { [unowned self] args, kwargs in
      var frame: [String: JinjaValue] = [:]
      for (i, (p, defaultExpr)) in parameters.enumerated() {
        if i < args.count { frame[p] = args[i] }
        else if let kw = kwargs.first(where: { $0.0 == p }) { frame[p] = kw.1 }
        else if let defaultExpr { frame[p] = try self.evaluate(defaultExpr) }
        else { frame[p] = .undefined(p) }
      }
      frame["varargs"] = .array(Array(args.dropFirst(parameters.count)))
      guard self.calls < JinjaLimits.callDepth else {
        throw self.fail("macro '\(name)' nested more than \(JinjaLimits.callDepth) calls deep (endless recursion?)")
      }
      let savedScopes = self.scopes, savedLine = self.line
      self.scopes = [self.scopes[0], frame]
      self.calls += 1
      defer { self.scopes = savedScopes; self.line = savedLine; self.calls -= 1 }
      return .string(try self.capture(body))
    }
  }

  // MARK: - Expressions

  func arguments(_ a: JinjaArguments) throws -> ([JinjaValue], [(String, JinjaValue)]) {
    (try a.positional.map(evaluate), try a.keyword.map { ($0.0, try evaluate($0.1)) })
  }

  func evaluate(_ e: JinjaExpr) throws -> JinjaValue {
    try step()
    switch e {
    case let .literal(v): return v
    case let .name(n): return lookup(n)
    case let .list(items): return .array(try items.map(evaluate))
    case let .dict(pairs):
      var o = JinjaObject()
      for (k, v) in pairs { o[try evaluate(k).pythonString] = try evaluate(v) }
      return .object(o)
    case let .attribute(base, name): return try JinjaBuiltins.attribute(try evaluate(base), name, self)
    case let .item(base, index): return try JinjaBuiltins.item(try evaluate(base), try evaluate(index), self)
    case let .slice(base, start, stop, step):
      return try JinjaBuiltins.slice(try evaluate(base), try start.map(evaluate), try stop.map(evaluate),
                                     try step.map(evaluate), self)
    case let .call(callee, args):
      let f = try evaluate(callee)
      guard case let .function(fn) = f else {
        if case let .undefined(n) = f { throw fail("'\(n)' is undefined and cannot be called") }
        throw fail("'\(f.typeName)' object is not callable")
      }
      let (positional, keyword) = try arguments(args)
      return try fn.body(positional, keyword)
    case let .filter(base, name, args):
      return try JinjaBuiltins.filter(name, try evaluate(base), try arguments(args), self)
    case let .test(base, name, args, negated):
      let result = try JinjaBuiltins.test(name, try evaluate(base), try arguments(args).0, self)
      return .bool(result != negated)
    case let .not(x): return .bool(!(try evaluate(x).isTruthy))
    case let .negate(x):
      switch try evaluate(x) {
      case let .int(i): return .int(-i)
      case let .double(d): return .double(-d)
      case let .bool(b): return .int(b ? -1 : 0)
      case let v: throw fail("bad operand type for unary -: '\(v.typeName)'")
      }
    case let .and(a, b):
      let l = try evaluate(a); return l.isTruthy ? try evaluate(b) : l
    case let .or(a, b):
      let l = try evaluate(a); return l.isTruthy ? l : try evaluate(b)
    case let .binary(op, a, b): return try JinjaBuiltins.binary(op, try evaluate(a), try evaluate(b), self)
    case let .compare(first, rest):
      var left = try evaluate(first)
      for (op, rhs) in rest {
        let right = try evaluate(rhs)
        if !(try JinjaBuiltins.compare(op, left, right, self)) { return .bool(false) }
        left = right
      }
      return .bool(true)
    case let .conditional(condition, then, otherwise):
      if try evaluate(condition).isTruthy { return try evaluate(then) }
      return try otherwise.map(evaluate) ?? .undefined("conditional")
    }
  }

  /// Python iteration: lists, dict keys, string characters; Undefined is empty.
  func iterate(_ v: JinjaValue) throws -> [JinjaValue] {
    switch v {
    case let .array(a): return a
    case let .object(o): return o.keys.map(JinjaValue.string)
    case let .string(s): return s.unicodeScalars.map { .string(String($0)) }
    case .undefined: return []
    case let .namespace(n): return n.values.map { .string($0.0) }
    default: throw fail("'\(v.typeName)' object is not iterable")
    }
  }
}
