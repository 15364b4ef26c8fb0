/// One relation between two live settings that a design relies on (SPEC-services "Configuration invariants"): each
/// setting can be valid alone and the pair still lose or duplicate data. A violated invariant names both values and
/// where each came from, so the fix is obvious from the message.
public struct ConfigurationInvariant: Sendable, Equatable, CustomStringConvertible {
    /// What must hold, in words: "the stream's duplicate window covers the relay's retry horizon".
    public let rule: String
    public let holds: Bool
    /// Both values with their sources.
    public let values: String

    public init(rule: String, holds: Bool, values: String) {
        self.rule = rule
        self.holds = holds
        self.values = values
    }

    public var description: String { "\(holds ? "holds" : "VIOLATED"): \(rule) (\(values))" }

    /// A named setting with where it was read.
    public struct Setting<Value: Sendable & Equatable & Comparable>: Sendable {
        public let name: String
        public let value: Value
        public init(_ name: String, _ value: Value) {
            self.name = name
            self.value = value
        }
    }

    public static func atLeast<Value>(_ rule: String, _ left: Setting<Value>, _ right: Setting<Value>) -> ConfigurationInvariant {
        comparing(rule, left, right, holds: left.value >= right.value)
    }

    public static func below<Value>(_ rule: String, _ left: Setting<Value>, _ right: Setting<Value>) -> ConfigurationInvariant {
        comparing(rule, left, right, holds: left.value < right.value)
    }

    public static func equal<Value>(_ rule: String, _ left: Setting<Value>, _ right: Setting<Value>) -> ConfigurationInvariant {
        comparing(rule, left, right, holds: left.value == right.value)
    }

    static func comparing<Value>(_ rule: String, _ left: Setting<Value>, _ right: Setting<Value>, holds: Bool) -> ConfigurationInvariant {
        ConfigurationInvariant(rule: rule, holds: holds, values: "\(left.name) = \(show(left.value)), \(right.name) = \(show(right.value))")
    }

    static func show<Value>(_ value: Value) -> String {
        guard let duration = value as? Duration else { return "\(value)" }
        let milliseconds = duration.components.seconds * 1_000 + duration.components.attoseconds / 1_000_000_000_000_000
        return milliseconds % 1_000 == 0 ? "\(milliseconds / 1_000) s" : "\(milliseconds) ms"
    }
}

extension Array where Element == ConfigurationInvariant {
    /// The violated ones, one line each; empty when all hold.
    public var violations: [String] { filter { !$0.holds }.map(\.description) }
}
