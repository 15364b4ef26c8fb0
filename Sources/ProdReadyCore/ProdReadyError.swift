/// The one error type ProdReady's libraries throw: a stable code to match on, a message for people,
/// whether trying again can help, and the underlying cause.
///
/// `description` never includes credentials: callers put endpoints in messages only after `redacted`.
public struct ProdReadyError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// A connection to a dependency could not be made or was lost.
        public static let connectionFailed = Code("connection_failed")
        /// An operation did not finish within its deadline.
        public static let timeout = Code("timeout")
        /// The caller passed something malformed.
        public static let invalidArgument = Code("invalid_argument")
        /// The server answered with something the client did not expect.
        public static let protocolError = Code("protocol_error")
        /// The server refused the request (it answered, with an error).
        public static let serverError = Code("server_error")
        /// A conditional write's precondition did not hold.
        public static let preconditionFailed = Code("precondition_failed")
        /// The thing asked for does not exist.
        public static let notFound = Code("not_found")
        /// Credentials were refused.
        public static let accessDenied = Code("access_denied")
        /// The infrastructure provider cannot perform this control operation (e.g. an external deployment).
        public static let notControllable = Code("not_controllable")
        /// The component or stack is not running.
        public static let notRunning = Code("not_running")
        /// A port the caller asked for is already bound.
        public static let portInUse = Code("port_in_use")
        /// An executable the embedded stack needs is not installed.
        public static let missingBinary = Code("missing_binary")
        /// A child process failed to start or exited unexpectedly.
        public static let processFailed = Code("process_failed")
        /// The configuration (environment variables, files) is unusable.
        public static let configuration = Code("configuration")
        /// A state or data file is unreadable or inconsistent.
        public static let corruptState = Code("corrupt_state")
    }

    public var code: Code
    public var message: String
    /// Whether the same call may succeed later without the caller changing anything.
    public var isRetriable: Bool
    public var underlying: (any Error)?
    public var file: String
    public var line: Int

    public init(
        _ code: Code,
        _ message: String,
        retriable: Bool = false,
        underlying: (any Error)? = nil,
        file: String = #fileID,
        line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.isRetriable = retriable
        self.underlying = underlying
        self.file = file
        self.line = line
    }

    public var description: String {
        var text = "\(code): \(message)"
        if let underlying { text += " (cause: \(underlying))" }
        return text
    }
}

extension ProdReadyError: Equatable {
    /// Two errors are equal when code, message and retriability match; causes and locations are ignored.
    public static func == (lhs: ProdReadyError, rhs: ProdReadyError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message && lhs.isRetriable == rhs.isRetriable
    }
}

/// Replaces the password in a URL-like string with `***` so endpoints can appear in messages and logs.
public func redacted(_ url: String) -> String {
    guard let schemeEnd = url.firstRange(of: "://"),
          let at = url[schemeEnd.upperBound...].firstIndex(of: "@")
    else { return url }
    let userInfo = url[schemeEnd.upperBound..<at]
    guard let colon = userInfo.firstIndex(of: ":") else { return url }
    return String(url[..<colon]) + ":***" + String(url[at...])
}

/// The text in a NUL-terminated C buffer that a C library filled in.
public func string(fromCBuffer buffer: [CChar]) -> String {
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}

extension String {
    /// Every occurrence of `target` replaced by `replacement` (Foundation-free).
    public func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = self[...]
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
