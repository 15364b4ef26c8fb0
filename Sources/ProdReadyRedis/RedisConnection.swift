public import ProdReadyCore
import CHiredis
#if canImport(Glibc)
import Glibc
#endif

/// A Redis reply (RESP2).
public enum RedisValue: Sendable, Equatable {
    case string([UInt8])
    case status(String)
    case integer(Int64)
    case array([RedisValue])
    case null
    /// An error reply nested in an array (EXEC's per-command results); a top-level error is thrown instead.
    case error(String)

    /// A bulk string or status as UTF-8 text.
    public var text: String? {
        switch self {
        case .string(let bytes): String(decoding: bytes, as: UTF8.self)
        case .status(let status): status
        default: nil
        }
    }

    public var bytes: [UInt8]? {
        if case .string(let bytes) = self { bytes } else { nil }
    }

    /// An integer reply, or a bulk string holding one (as some commands answer).
    public var integer: Int64? {
        switch self {
        case .integer(let value): value
        case .string(let bytes): Int64(String(decoding: bytes, as: UTF8.self))
        default: nil
        }
    }

    public var array: [RedisValue]? {
        if case .array(let elements) = self { elements } else { nil }
    }
}

/// Where a Redis server listens and how to log in, parsed from `redis://[[user]:password@]host[:port][/db]`.
public struct RedisEndpoint: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var database: Int
    public var username: String?
    public var password: String?

    public init(url: String) throws {
        guard url.hasPrefix("redis://") else {
            throw ProdReadyError(.invalidArgument, "Redis URL must start with redis://, got '\(redacted(url))'")
        }
        var rest = Substring(url.dropFirst("redis://".count))
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            if let colon = credentials.firstIndex(of: ":") {
                username = credentials[..<colon].isEmpty ? nil : String(credentials[..<colon])
                password = String(credentials[credentials.index(after: colon)...])
            } else {
                // redis://secret@host is the password-only form.
                password = String(credentials)
            }
            func decode(_ text: String?) throws -> String? {
                guard let text else { return nil }
                guard let decoded = percentDecoded(text) else {
                    throw ProdReadyError(.invalidArgument, "Redis URL '\(redacted(url))' has malformed percent-encoding in its credentials")
                }
                return decoded
            }
            username = try decode(username)
            password = try decode(password)
            rest = rest[rest.index(after: at)...]
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let databaseText = rest[rest.index(after: slash)...]
            if !databaseText.isEmpty {
                guard let number = Int(databaseText), (0...15).contains(number) else {
                    throw ProdReadyError(.invalidArgument, "Redis database in '\(redacted(url))' must be a number from 0 to 15")
                }
                database = number
            }
            rest = rest[..<slash]
        }
        let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2, let host = parts.first, !host.isEmpty else {
            throw ProdReadyError(.invalidArgument, "Redis URL '\(redacted(url))' has no host")
        }
        var port = 6379
        if parts.count == 2 {
            guard let number = Int(parts[1]), (1...65535).contains(number) else {
                throw ProdReadyError(.invalidArgument, "Redis URL '\(redacted(url))' has an invalid port")
            }
            port = number
        }
        self.host = String(host)
        self.port = port
        self.database = database
        self.username = username
        self.password = password
    }
}

private func percentDecoded(_ text: String) -> String? {
    var bytes: [UInt8] = []
    var iterator = Array(text.utf8).makeIterator()
    while let byte = iterator.next() {
        if byte == UInt8(ascii: "%") {
            guard let high = iterator.next(), let low = iterator.next(),
                  let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(value)
        } else {
            bytes.append(byte)
        }
    }
    return String(validating: bytes, as: UTF8.self)
}

/// What the typed commands need: send one command, optionally allowing it to block on the server.
public protocol RedisCommandRunner: Sendable {
    /// Sends one command. `blockingFor` is how long the server may hold the reply (BLMOVE, XREADGROUP BLOCK);
    /// the read deadline is extended by it.
    func command(bytes arguments: [[UInt8]], blockingFor: Duration?) async throws -> RedisValue
}

extension RedisCommandRunner {
    /// Sends one command, e.g. `["SET", "k", "v"]`. Server errors (`-ERR …`) are thrown as `server_error`.
    @discardableResult
    public func command(_ arguments: [String]) async throws -> RedisValue {
        try await command(bytes: arguments.map { Array($0.utf8) }, blockingFor: nil)
    }

    @discardableResult
    public func command(bytes arguments: [[UInt8]]) async throws -> RedisValue {
        try await command(bytes: arguments, blockingFor: nil)
    }
}

/// One hiredis connection. Commands run one at a time on the connection's own executor (hiredis' blocking API
/// must not occupy the cooperative pool). After an I/O error the connection is dropped and the next command
/// connects again, so a restarted server is picked up without recreating the client; the failed command
/// itself is reported as a retriable `connection_failed` (it may or may not have been applied).
public final class RedisConnection: RedisCommandRunner, @unchecked Sendable {
    // @unchecked Sendable: `context` is only touched on `executor`'s serial queue.
    private var context: UnsafeMutablePointer<redisContext>?
    public let endpoint: RedisEndpoint
    private let timeout: Duration
    private let executor: BlockingExecutor

    /// - Parameter timeout: the connect timeout and the deadline for each reply (plus the blocking time of
    ///   blocking commands).
    public init(url: String, timeout: Duration = .seconds(2)) async throws {
        endpoint = try RedisEndpoint(url: url)
        guard timeout > .zero else { throw ProdReadyError(.invalidArgument, "Redis timeout must be positive, got \(timeout)") }
        self.timeout = timeout
        executor = BlockingExecutor(label: "redis.\(endpoint.port)")
        try await executor.run { [self] in _ = try connectIfNeeded() }
    }

    deinit {
        guard let context else { return }
        let handle = SendableHandle(OpaquePointer(context))
        executor.submit { redisFree(UnsafeMutablePointer<redisContext>(handle.pointer)) }
    }

    public func command(bytes arguments: [[UInt8]], blockingFor: Duration?) async throws -> RedisValue {
        try Self.validate(arguments)
        if let blockingFor, blockingFor < .zero {
            throw ProdReadyError(.invalidArgument, "a blocking time must not be negative, got \(blockingFor)")
        }
        return try await executor.run { [self] in
            let context = try connectIfNeeded()
            if let blockingFor { setReadTimeout(context, timeout + blockingFor) }
            defer { if blockingFor != nil, self.context != nil { setReadTimeout(context, timeout) } }
            let reply = withArgv(arguments) { argc, argv, lengths in redisCommandArgv(context, argc, argv, lengths) }
            guard let reply else { throw dropConnection(context, doing: Self.name(arguments)) }
            defer { freeReplyObject(reply) }
            return try convert(reply.assumingMemoryBound(to: redisReply.self))
        }
    }

    /// Sends every command before reading any reply (one write, one round trip for the batch). Each command's
    /// outcome is returned in order: server errors as failures of that command alone. A lost connection fails
    /// the whole call with a retriable `connection_failed`; which commands were applied is then unknown.
    public func pipeline(_ commands: [[[UInt8]]]) async throws -> [Result<RedisValue, ProdReadyError>] {
        for command in commands { try Self.validate(command) }
        guard !commands.isEmpty else { return [] }
        return try await executor.run { [self] in
            let context = try connectIfNeeded()
            for command in commands {
                let status = withArgv(command) { argc, argv, lengths in redisAppendCommandArgv(context, argc, argv, lengths) }
                guard status == REDIS_OK else { throw dropConnection(context, doing: "pipeline") }
            }
            var results: [Result<RedisValue, ProdReadyError>] = []
            results.reserveCapacity(commands.count)
            for _ in commands {
                var reply: UnsafeMutableRawPointer?
                guard redisGetReply(context, &reply) == REDIS_OK, let reply else {
                    throw dropConnection(context, doing: "pipeline (\(results.count) of \(commands.count) replies read)")
                }
                defer { freeReplyObject(reply) }
                results.append(Result { try convert(reply.assumingMemoryBound(to: redisReply.self)) }.mapError { error in
                    error as? ProdReadyError ?? ProdReadyError(.protocolError, "\(error)")
                })
            }
            return results
        }
    }

    /// `pipeline` for text commands.
    public func pipeline(_ commands: [[String]]) async throws -> [Result<RedisValue, ProdReadyError>] {
        try await pipeline(commands.map { $0.map { Array($0.utf8) } })
    }

    /// Closes the socket now (the next command would connect again).
    public func close() async {
        _ = try? await executor.run { [self] in
            if let context { redisFree(context) }
            context = nil
        }
    }

    static func validate(_ arguments: [[UInt8]]) throws {
        guard let name = arguments.first, !name.isEmpty else {
            throw ProdReadyError(.invalidArgument, "a Redis command needs a name")
        }
    }

    static func name(_ arguments: [[UInt8]]) -> String {
        String(decoding: arguments.first ?? [], as: UTF8.self).uppercased()
    }

    private func dropConnection(_ context: UnsafeMutablePointer<redisContext>, doing: String) -> ProdReadyError {
        let message = errorText(context)
        let timedOut = context.pointee.err == REDIS_ERR_IO && (message.contains("temporarily unavailable") || message.contains("timed out"))
        redisFree(context)
        self.context = nil
        return timedOut
            ? ProdReadyError(.timeout, "Redis \(doing) got no reply from \(endpoint.host):\(endpoint.port) within \(timeout)", retriable: true)
            : ProdReadyError(.connectionFailed, "Redis \(doing) to \(endpoint.host):\(endpoint.port) failed: \(message)", retriable: true)
    }

    private func setReadTimeout(_ context: UnsafeMutablePointer<redisContext>, _ duration: Duration) {
        _ = redisSetTimeout(context, timeval(duration))
    }

    @discardableResult
    private func connectIfNeeded() throws -> UnsafeMutablePointer<redisContext> {
        if let context { return context }
        guard let newContext = redisConnectWithTimeout(endpoint.host, Int32(endpoint.port), timeval(timeout)) else {
            throw ProdReadyError(.connectionFailed, "cannot allocate a Redis context", retriable: true)
        }
        if newContext.pointee.err != 0 {
            let message = errorText(newContext)
            redisFree(newContext)
            throw ProdReadyError(.connectionFailed, "cannot connect to Redis at \(endpoint.host):\(endpoint.port): \(message)", retriable: true)
        }
        _ = redisSetTimeout(newContext, timeval(timeout))
        var handshake: [[String]] = []
        if let password = endpoint.password {
            handshake.append(["AUTH"] + (endpoint.username.map { [$0] } ?? []) + [password])
        }
        if endpoint.database != 0 { handshake.append(["SELECT", String(endpoint.database)]) }
        for command in handshake {
            let arguments = command.map { Array($0.utf8) }
            guard let reply = withArgv(arguments, { redisCommandArgv(newContext, $0, $1, $2) }) else {
                let message = errorText(newContext)
                redisFree(newContext)
                throw ProdReadyError(.connectionFailed, "Redis \(command[0]) at \(endpoint.host):\(endpoint.port) failed: \(message)", retriable: true)
            }
            defer { freeReplyObject(reply) }
            do {
                _ = try convert(reply.assumingMemoryBound(to: redisReply.self))
            } catch let error as ProdReadyError {
                redisFree(newContext)
                let code: ProdReadyError.Code = command[0] == "AUTH" ? .accessDenied : .invalidArgument
                throw ProdReadyError(code, "Redis refused \(command[0]) at \(endpoint.host):\(endpoint.port): \(error.message)")
            }
        }
        context = newContext
        return newContext
    }
}

private func timeval(_ duration: Duration) -> timeval {
    let microseconds = max(1, duration.wholeMicroseconds)
    return Glibc.timeval(tv_sec: Int(microseconds / 1_000_000), tv_usec: Int(microseconds % 1_000_000))
}

private func errorText(_ context: UnsafeMutablePointer<redisContext>) -> String {
    withUnsafePointer(to: context.pointee.errstr) { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
}

private func withArgv<Result>(_ arguments: [[UInt8]], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> Result) -> Result {
    // One buffer holding every argument back to back; hiredis copies them into its output buffer.
    let total = arguments.reduce(0) { $0 + $1.count }
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(total, 1), alignment: 1)
    defer { buffer.deallocate() }
    var argv: [UnsafePointer<CChar>?] = []
    argv.reserveCapacity(arguments.count)
    var offset = 0
    for argument in arguments {
        argument.withUnsafeBytes { bytes in
            if let base = bytes.baseAddress { (buffer + offset).copyMemory(from: base, byteCount: bytes.count) }
        }
        argv.append(UnsafePointer((buffer + offset).assumingMemoryBound(to: CChar.self)))
        offset += argument.count
    }
    let lengths: [Int] = arguments.map(\.count)
    return argv.withUnsafeMutableBufferPointer { argvBuffer in
        lengths.withUnsafeBufferPointer { lengthBuffer in
            body(Int32(arguments.count), argvBuffer.baseAddress!, lengthBuffer.baseAddress!)
        }
    }
}

private func convert(_ reply: UnsafeMutablePointer<redisReply>) throws -> RedisValue {
    let value = reply.pointee
    switch value.type {
    case REDIS_REPLY_STRING:
        return .string(value.str.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: value.len)) } ?? [])
    case REDIS_REPLY_STATUS:
        return .status(value.str.map { String(cString: $0) } ?? "")
    case REDIS_REPLY_INTEGER:
        return .integer(Int64(value.integer))
    case REDIS_REPLY_NIL:
        return .null
    case REDIS_REPLY_ERROR:
        throw ProdReadyError(.serverError, "Redis error: \(value.str.map { String(cString: $0) } ?? "unknown")")
    case REDIS_REPLY_ARRAY:
        var elements: [RedisValue] = []
        elements.reserveCapacity(value.elements)
        for index in 0..<value.elements {
            guard let element = value.element[index] else { continue }
            // An error nested in an array (EXEC, XAUTOCLAIM) belongs to that element, not the whole reply.
            if element.pointee.type == REDIS_REPLY_ERROR {
                elements.append(.error(element.pointee.str.map { String(cString: $0) } ?? "unknown"))
            } else {
                elements.append(try convert(element))
            }
        }
        return .array(elements)
    default:
        throw ProdReadyError(.protocolError, "unexpected Redis reply type \(value.type)")
    }
}
