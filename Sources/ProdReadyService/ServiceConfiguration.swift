import Foundation

/// A setting a service cannot start with. Printed as one line naming the setting, the bad value (credentials
/// redacted by the caller passing nil) and what is expected; the process exits non-zero and never starts
/// half-configured.
public struct ServiceConfigurationError: Error, CustomStringConvertible, Sendable {
    public var setting: String
    public var value: String?
    public var expected: String

    public init(setting: String, value: String?, expected: String) {
        self.setting = setting
        self.value = value
        self.expected = expected
    }

    public var description: String {
        if let value { return "\(setting)='\(value)' is invalid: expected \(expected)" }
        return "\(setting) is invalid: expected \(expected)"
    }
}

/// Several bad settings at once: every one is reported, one line each.
public struct ServiceConfigurationErrors: Error, CustomStringConvertible, Sendable {
    public var problems: [ServiceConfigurationError]
    public init(_ problems: [ServiceConfigurationError]) { self.problems = problems }
    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

/// Crash points (SPEC-services "Chaos hooks"): `CHAOS_CRASH_POINT=<process>:<point>[,…]` makes a process exit
/// with status 42 when it reaches that point, and only when `PRODREADY_CHAOS=1` is set as well.
public struct CrashPoints: Sendable {
    public static let exitStatus: Int32 = 42
    public let process: String
    public let armed: Set<String>

    /// Reads the points armed for `process`. A point this process does not have is a configuration error, so a
    /// typo cannot silently disable a chaos test. Points for other processes are ignored.
    public init(process: String, known: Set<String>, environment: [String: String]? = nil) throws {
        let environment = environment ?? ProcessInfo.processInfo.environment
        self.process = process
        guard environment["PRODREADY_CHAOS"] == "1", let raw = environment["CHAOS_CRASH_POINT"], !raw.isEmpty else {
            armed = []
            return
        }
        var points: Set<String> = []
        for entry in raw.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            let pieces = entry.split(separator: ":", maxSplits: 1).map(String.init)
            guard pieces.count == 2, !pieces[0].isEmpty, !pieces[1].isEmpty else {
                throw ServiceConfigurationError(setting: "CHAOS_CRASH_POINT", value: raw, expected: "<process>:<point>[,<process>:<point>…]")
            }
            guard pieces[0] == process else { continue }
            guard known.contains(pieces[1]) else {
                throw ServiceConfigurationError(
                    setting: "CHAOS_CRASH_POINT", value: raw, expected: "a point of \(process): \(known.sorted().joined(separator: ", "))")
            }
            points.insert(pieces[1])
        }
        armed = points
    }

    /// Exits the process with status 42 if `point` is armed; otherwise does nothing.
    public func reach(_ point: String) {
        guard armed.contains(point) else { return }
        FileHandle.standardError.write(Data(("💥 \(process): crash point \(point) reached, exiting with status \(Self.exitStatus)\n").utf8))
        exit(Self.exitStatus)
    }
}

/// Resolves a process's settings: the command-line option, else its environment variable, else the default;
/// every bad value is collected so that one start reports all of them, one line each.
public final class SettingsReader {
    public let environment: [String: String]
    public private(set) var problems: [ServiceConfigurationError] = []

    public init(environment: [String: String]? = nil) {
        self.environment = environment ?? ProcessInfo.processInfo.environment
    }

    /// A text setting; `secret` keeps its value out of any message.
    public func text(_ option: String?, flag: String? = nil, env: String, default fallback: String? = nil, secret: Bool = false, expected: String, valid: (String) -> Bool = { !$0.isEmpty }) -> String {
        let (value, source) = raw(option, flag: flag, env: env)
        guard let value else {
            if let fallback { return fallback }
            problems.append(ServiceConfigurationError(setting: env, value: nil, expected: "\(expected) (not set; \(flag ?? "--" + Self.optionName(env)) or \(env))"))
            return ""
        }
        guard valid(value) else {
            problems.append(ServiceConfigurationError(setting: source, value: secret ? "<redacted>" : value, expected: expected))
            return ""
        }
        return value
    }

    /// A whole number in `range`.
    public func integer(_ option: String?, flag: String? = nil, env: String, default fallback: Int, range: ClosedRange<Int>, expected: String) -> Int {
        let (value, source) = raw(option, flag: flag, env: env)
        guard let value else { return fallback }
        guard let number = Int(value), range.contains(number) else {
            problems.append(ServiceConfigurationError(setting: source, value: value, expected: "\(expected), \(range.lowerBound) to \(range.upperBound)"))
            return fallback
        }
        return number
    }

    /// A duration in seconds (fractions allowed) in `range`.
    public func seconds(_ option: String?, flag: String? = nil, env: String, default fallback: Double, range: ClosedRange<Double>) -> Duration {
        let (value, source) = raw(option, flag: flag, env: env)
        guard let value else { return .milliseconds(Int64(fallback * 1000)) }
        guard let number = Double(value), range.contains(number) else {
            problems.append(ServiceConfigurationError(setting: source, value: value, expected: "seconds from \(range.lowerBound) to \(range.upperBound)"))
            return .milliseconds(Int64(fallback * 1000))
        }
        return .milliseconds(Int64(number * 1000))
    }

    /// Records a problem found by a check that spans settings.
    public func problem(_ setting: String, value: String?, expected: String) {
        problems.append(ServiceConfigurationError(setting: setting, value: value, expected: expected))
    }

    /// The services' JWT secret (`ServiceSecrets`), at least `TokenAuthority.minimumSecretLength` bytes; a problem
    /// otherwise, and an empty secret.
    public func jwtSecret(home: String) -> String {
        do {
            let secret = try ServiceSecrets.jwtSecret(home: home, environment: environment)
            if secret.utf8.count < TokenAuthority.minimumSecretLength {
                problem(ServiceSecrets.environmentVariable, value: nil, expected: "at least \(TokenAuthority.minimumSecretLength) bytes, got \(secret.utf8.count)")
            }
            return secret
        } catch {
            problem(ServiceSecrets.environmentVariable, value: nil, expected: "\(error)")
            return ""
        }
    }

    /// Throws every problem found, if any.
    public func finish() throws(ServiceConfigurationErrors) {
        if !problems.isEmpty { throw ServiceConfigurationErrors(problems) }
    }

    private func raw(_ option: String?, flag: String?, env: String) -> (String?, String) {
        if let option { return (option, flag ?? "--\(Self.optionName(env))") }
        if let value = environment[env], !value.isEmpty { return (value, env) }
        return (nil, env)
    }

    /// `OMS_TOPIC_PREFIX` → `topic-prefix` style names are the caller's; this only lower-cases and dashes.
    static func optionName(_ env: String) -> String { env.lowercased().replacingOccurrences(of: "_", with: "-") }
}
