import Foundation

/// Where the services' shared JWT secret comes from: `PRODREADY_JWT_SECRET` when set, else a random secret kept
/// in `<home>/jwt-secret` (mode 0600, made on first use), so services started by `prodready up`, the tests and
/// `prodready token` agree without anyone configuring it.
public enum ServiceSecrets {
    public static let environmentVariable = "PRODREADY_JWT_SECRET"

    public static func jwtSecret(home: String, environment: [String: String]? = nil) throws -> String {
        let environment = environment ?? ProcessInfo.processInfo.environment
        if let secret = environment[environmentVariable], !secret.isEmpty { return secret }
        let path = home + "/jwt-secret"
        if let stored = try? String(contentsOfFile: path, encoding: .utf8), !stored.isEmpty {
            return stored.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        var generator = SystemRandomNumberGenerator()
        let secret = (0..<48).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        let temporary = path + ".\(getpid()).tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(secret.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ServiceConfigurationError(setting: environmentVariable, value: nil, expected: "a secret, or a writable \(home) to keep one in")
        }
        // Two processes racing to make the secret: the first rename wins and both read it back.
        if link(temporary, path) != 0 && errno != EEXIST {
            unlink(temporary)
            throw ServiceConfigurationError(setting: environmentVariable, value: nil, expected: "a secret, or a writable \(home) to keep one in")
        }
        unlink(temporary)
        return try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Parses a duration such as `90s`, `15m`, `1h` or `7d` (a bare number is seconds).
public func parseTimeToLive(_ text: String) -> Duration? {
    let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3_600, "d": 86_400]
    guard let last = text.last else { return nil }
    let (digits, multiplier) = units[last].map { (text.dropLast(), $0) } ?? (Substring(text), 1)
    guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = Int64(digits), value > 0, value <= 366 * 86_400 / multiplier else { return nil }
    return .seconds(value * multiplier)
}
