import Foundation

// MARK: - Globals

extension JinjaBuiltins {
  /// Globals of transformers' chat-template environment: jinja2's `range`, `namespace`,
  /// `dict`, plus transformers' `raise_exception` and `strftime_now`.
  static func global(_ name: String, _ ip: JinjaInterpreter) -> JinjaValue? {
    switch name {
    case "range":
      return .function(JinjaFunction("range") { args, _ in
        let ints = args.compactMap(\.integer)
        guard ints.count == args.count, (1...3).contains(ints.count) else { throw ip.fail("range() needs 1-3 integers") }
        let (start, stop, step) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count == 3 ? ints[2] : 1)
        guard step != 0 else { throw ip.fail("range() arg 3 must not be zero") }
        guard (stop - start) / step < 100_000 else { throw ip.fail("range() too large") }
        return .array(Array(stride(from: start, to: stop, by: step)).map(JinjaValue.int))
      })
    case "namespace":
      return .function(JinjaFunction("namespace") { args, kwargs in
        var values: [(String, JinjaValue)] = []
        if case let .object(o)? = args.first { values = o.pairs }
        return .namespace(JinjaNamespace(values + kwargs))
      })
    case "dict":
      return .function(JinjaFunction("dict") { args, kwargs in
        var o = JinjaObject()
        if case let .object(base)? = args.first { o = base }
        for (k, v) in kwargs { o[k] = v }
        return .object(o)
      })
    case "raise_exception":
      return .function(JinjaFunction("raise_exception") { args, _ in
        throw ChatTemplateError.raised(args.first?.pythonString ?? "")
      })
    case "strftime_now":
      return .function(JinjaFunction("strftime_now") { args, _ in
        .string(strftime(args.first?.pythonString ?? "%Y-%m-%d"))
      })
    default: return nil
    }
  }

  /// `datetime.now().strftime(format)` in local time, as transformers does.
  static func strftime(_ format: String) -> String {
    var t = time(nil)
    var tmValue = tm()
    localtime_r(&t, &tmValue)
    var buffer = [Int8](repeating: 0, count: 256)
    let n = Foundation.strftime(&buffer, buffer.count, format, &tmValue)
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}

// MARK: - Methods

extension JinjaBuiltins {
  /// A bound method of a str/dict/list, or nil when `name` is not one. Mutating list and
  /// dict methods are refused, as in transformers' ImmutableSandboxedEnvironment.
  static func method(_ v: JinjaValue, _ name: String, _ ip: JinjaInterpreter) -> JinjaValue? {
    let body: (([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue)?
    switch v {
    case let .string(s): body = stringMethod(s, name, ip)
    case let .object(o):
      switch name {
      case "get": body = { args, _ in o[args.first?.pythonString ?? ""] ?? (args.count > 1 ? args[1] : .none) }
      case "items": body = { _, _ in .array(o.pairs.map { .array([.string($0.0), $0.1]) }) }
      case "keys": body = { _, _ in .array(o.keys.map(JinjaValue.string)) }
      case "values": body = { _, _ in .array(o.pairs.map(\.1)) }
      case "pop", "update", "setdefault", "clear", "popitem": body = immutable(name, ip)
      default: body = nil
      }
    case let .array(a):
      switch name {
      case "index": body = { args, _ in
        guard let i = a.firstIndex(of: args.first ?? .none) else { throw ip.fail("value is not in list") }
        return .int(i)
      }
      case "count": body = { args, _ in .int(a.filter { $0 == (args.first ?? .none) }.count) }
      case "append", "extend", "insert", "pop", "remove", "sort", "reverse", "clear": body = immutable(name, ip)
      default: body = nil
      }
    default: body = nil
    }
    return body.map { .function(JinjaFunction(name, $0)) }
  }

  private static func immutable(_ name: String, _ ip: JinjaInterpreter) -> ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue {
    { _, _ in throw ip.fail("'\(name)' modifies a value, which chat templates may not do (use namespace())") }
  }

  private static func stringMethod(_ s: String, _ name: String, _ ip: JinjaInterpreter)
    -> (([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue)? {
    func str(_ args: [JinjaValue], _ i: Int) -> String? {
      i < args.count && args[i] != .none ? args[i].pythonString : nil
    }
    switch name {
    case "strip": return { a, _ in .string(strip(s, str(a, 0), left: true, right: true)) }
    case "lstrip": return { a, _ in .string(strip(s, str(a, 0), left: true, right: false)) }
    case "rstrip": return { a, _ in .string(strip(s, str(a, 0), left: false, right: true)) }
    case "upper": return { _, _ in .string(s.uppercased()) }
    case "lower": return { _, _ in .string(s.lowercased()) }
    case "title": return { _, _ in .string(pythonTitle(s)) }
    case "capitalize": return { _, _ in .string(capitalize(s)) }
    case "startswith", "endswith":
      return { a, _ in
        let candidates: [JinjaValue]
        if case let .array(list)? = a.first { candidates = list } else { candidates = a.isEmpty ? [] : [a[0]] }
        return .bool(candidates.contains { c in
          let p = c.pythonString.unicodeScalars
          return name == "startswith" ? s.unicodeScalars.starts(with: p)
            : s.unicodeScalars.reversed().starts(with: p.reversed())
        })
      }
    case "split", "rsplit":
      return { a, kw in
        let sep = str(a, 0) ?? kw.first { $0.0 == "sep" }.flatMap { $0.1 == .none ? nil : $0.1.pythonString }
        let maxsplit = (a.count > 1 ? a[1].integer : kw.first { $0.0 == "maxsplit" }?.1.integer) ?? -1
        return .array(split(s, sep, maxsplit: maxsplit, fromRight: name == "rsplit").map(JinjaValue.string))
      }
    case "splitlines": return { _, _ in .array(s.split(omittingEmptySubsequences: false) { $0 == "\n" }
      .map { .string(String($0)) }.dropLast(s.hasSuffix("\n") ? 1 : 0)) }
    case "replace":
      return { a, _ in .string(replace(s, str(a, 0) ?? "", str(a, 1) ?? "", count: a.count > 2 ? a[2].integer : nil)) }
    case "find": return { a, _ in
      guard let n = str(a, 0), let r = s.range(of: n) else { return .int(-1) }
      return .int(s.unicodeScalars.distance(from: s.startIndex, to: r.lowerBound))
    }
    case "count": return { a, _ in .int(max(s.components(separatedBy: str(a, 0) ?? "").count - 1, 0)) }
    case "join": return { a, _ in .string(try ip.iterate(a.first ?? .array([])).map(\.pythonString).joined(separator: s)) }
    case "isdigit": return { _, _ in .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.numericType != nil }) }
    case "isspace": return { _, _ in .bool(!s.isEmpty && s.unicodeScalars.allSatisfy(\.properties.isWhitespace)) }
    case "isalpha": return { _, _ in .bool(!s.isEmpty && s.unicodeScalars.allSatisfy(\.properties.isAlphabetic)) }
    case "format": return { a, kw in .string(try format(s, a, kw, ip)) }
    default: return nil
    }
  }
}

// MARK: - String helpers (Python semantics)

extension JinjaBuiltins {
  /// `str.strip([chars])`.
  static func strip(_ s: String, _ chars: String?, left: Bool, right: Bool) -> String {
    let set = chars.map { Set($0.unicodeScalars) }
    let drop: (Unicode.Scalar) -> Bool = { set?.contains($0) ?? $0.properties.isWhitespace }
    var u = Substring(s).unicodeScalars[...]
    if left { while let f = u.first, drop(f) { u = u.dropFirst() } }
    if right { while let l = u.last, drop(l) { u = u.dropLast() } }
    return String(String.UnicodeScalarView(u))
  }

  /// `str.capitalize()`.
  static func capitalize(_ s: String) -> String {
    guard let f = s.unicodeScalars.first else { return s }
    return String(f).uppercased() + String(String.UnicodeScalarView(s.unicodeScalars.dropFirst())).lowercased()
  }

  /// Python `str.title()`: upper after any non-cased character.
  static func pythonTitle(_ s: String) -> String {
    var out = "", previousCased = false
    for u in s.unicodeScalars {
      let cased = u.properties.isCased
      out += previousCased ? String(u).lowercased() : String(u).uppercased()
      previousCased = cased
    }
    return out
  }

  /// jinja2's `title` filter: capitalizes words split at whitespace, `-`, brackets.
  static func jinjaTitle(_ s: String) -> String {
    var out = "", atStart = true
    for u in s.unicodeScalars {
      let boundary = u.properties.isWhitespace || "-({[<".unicodeScalars.contains(u)
      out += boundary ? String(u) : (atStart ? String(u).uppercased() : String(u).lowercased())
      atStart = boundary
    }
    return out
  }

  /// `str.replace(old, new[, count])`.
  static func replace(_ s: String, _ old: String, _ new: String, count: Int?) -> String {
    guard let count, count >= 0 else { return old.isEmpty ? s : s.replacingOccurrences(of: old, with: new) }
    var result = "", rest = Substring(s), done = 0
    while done < count, !old.isEmpty, let r = rest.range(of: old) {
      result += rest[..<r.lowerBound] + new; rest = rest[r.upperBound...]; done += 1
    }
    return result + rest
  }

  /// `str.split(sep, maxsplit)` / `rsplit`; no separator splits on whitespace runs.
  static func split(_ s: String, _ sep: String?, maxsplit: Int, fromRight: Bool) -> [String] {
    guard let sep, !sep.isEmpty else {
      let words = s.split(whereSeparator: { $0.isWhitespace }).map(String.init)
      guard maxsplit >= 0, words.count > maxsplit + 1 else { return words }
      // Rare in templates: keep it simple and rejoin the tail with single spaces.
      return fromRight ? [words[..<(words.count - maxsplit)].joined(separator: " ")] + words.suffix(maxsplit)
        : Array(words.prefix(maxsplit)) + [words[maxsplit...].joined(separator: " ")]
    }
    var parts = s.components(separatedBy: sep)
    if maxsplit >= 0, parts.count > maxsplit + 1 {
      if fromRight {
        let head = parts[..<(parts.count - maxsplit)].joined(separator: sep)
        parts = [head] + parts.suffix(maxsplit)
      } else {
        parts = Array(parts.prefix(maxsplit)) + [parts[maxsplit...].joined(separator: sep)]
      }
    }
    return parts
  }

  /// `str.format` with `{}`, `{0}`, `{name}` and `{{`/`}}` (no format specs).
  static func format(_ s: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], _ ip: JinjaInterpreter) throws -> String {
    var out = "", field: String? = nil, auto = 0
    var chars = Array(s)[...]
    while let c = chars.popFirst() {
      if var f = field {
        if c == "}" {
          let value: JinjaValue?
          if f.isEmpty { value = auto < args.count ? args[auto] : nil; auto += 1 }
          else if let i = Int(f) { value = i < args.count ? args[i] : nil }
          else { value = kwargs.first { $0.0 == f }?.1 }
          guard let value else { throw ip.fail("format(): no value for field {\(f)}") }
          out += value.pythonString; field = nil
        } else { f.append(c); field = f }
      } else if c == "{" {
        if chars.first == "{" { chars.removeFirst(); out += "{" } else { field = "" }
      } else if c == "}" {
        if chars.first == "}" { chars.removeFirst() }
        out += "}"
      } else { out.append(c) }
    }
    return out
  }
}
