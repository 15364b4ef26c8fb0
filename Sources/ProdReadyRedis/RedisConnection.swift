import ProdReadyCore
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

    public var text: String? {
        switch self {
        case .string(let bytes): String(decoding: bytes, as: UTF8.self)
        case .status(let status): status
        default: nil
        }
    }
}

/// Where a Redis server listens, parsed from `redis://[:password@]host:port[/db]`.
public struct RedisEndpoint: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var database: Int

    public init(url: String) throws {
        guard url.hasPrefix("redis://") else {
            throw ProdReadyError(.invalidArgument, "Redis URL must start with redis://, got '\(redacted(url))'")
        }
        var rest = Substring(url.dropFirst("redis://".count))
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let databaseText = rest[rest.index(after: slash)...]
            if !databaseText.isEmpty {
                guard let number = Int(databaseText), number >= 0 else {
                    throw ProdReadyError(.invalidArgument, "Redis database in '\(redacted(url))' must be a non-negative integer")
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
    }
}

/// One hiredis connection. Commands run one at a time on the connection's own executor (hiredis' blocking API
/// must not occupy the cooperative pool). After an I/O error the next command reconnects first.
public final class RedisConnection: @unchecked Sendable {
    // @unchecked Sendable: `context` is only touched on `executor`'s serial queue.
    private var context: UnsafeMutablePointer<redisContext>?
    private let endpoint: RedisEndpoint
    private let timeout: Duration
    private let executor: BlockingExecutor

    public init(url: String, timeout: Duration = .seconds(2)) async throws {
        endpoint = try RedisEndpoint(url: url)
        self.timeout = timeout
        executor = BlockingExecutor(label: "redis.\(endpoint.port)")
        try await executor.run { [self] in try connectIfNeeded() }
    }

    deinit {
        guard let context else { return }
        let handle = SendableHandle(OpaquePointer(context))
        executor.submit { redisFree(UnsafeMutablePointer<redisContext>(handle.pointer)) }
    }

    /// Sends one command, e.g. `["SET", "k", "v"]`. Server errors (`-ERR …`) are thrown as `.serverError`.
    @discardableResult
    public func command(_ arguments: [String]) async throws -> RedisValue {
        try await command(bytes: arguments.map { Array($0.utf8) })
    }

    @discardableResult
    public func command(bytes arguments: [[UInt8]]) async throws -> RedisValue {
        guard let name = arguments.first, !name.isEmpty else {
            throw ProdReadyError(.invalidArgument, "a Redis command needs a name")
        }
        return try await executor.run { [self] in
            try connectIfNeeded()
            guard let context else { throw ProdReadyError(.connectionFailed, "Redis connection unavailable", retriable: true) }
            let reply = withArgv(arguments) { argc, argv, lengths in
                redisCommandArgv(context, argc, argv, lengths)
            }
            guard let reply else {
                let message = String(cString: withUnsafePointer(to: context.pointee.errstr) { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) })
                redisFree(context)
                self.context = nil
                throw ProdReadyError(.connectionFailed, "Redis \(String(decoding: name, as: UTF8.self)) failed: \(message)", retriable: true)
            }
            defer { freeReplyObject(reply) }
            return try convert(reply.assumingMemoryBound(to: redisReply.self))
        }
    }

    private func connectIfNeeded() throws {
        if context != nil { return }
        let microseconds = timeout.wholeMicroseconds
        let tv = timeval(tv_sec: Int(microseconds / 1_000_000), tv_usec: Int(microseconds % 1_000_000))
        guard let newContext = redisConnectWithTimeout(endpoint.host, Int32(endpoint.port), tv) else {
            throw ProdReadyError(.connectionFailed, "cannot allocate a Redis context", retriable: true)
        }
        if newContext.pointee.err != 0 {
            let message = String(cString: withUnsafePointer(to: newContext.pointee.errstr) { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) })
            redisFree(newContext)
            throw ProdReadyError(.connectionFailed, "cannot connect to Redis at \(endpoint.host):\(endpoint.port): \(message)", retriable: true)
        }
        _ = redisSetTimeout(newContext, tv)
        context = newContext
        if endpoint.database != 0 {
            let reply = withArgv([Array("SELECT".utf8), Array(String(endpoint.database).utf8)]) { argc, argv, lengths in
                redisCommandArgv(newContext, argc, argv, lengths)
            }
            if let reply { freeReplyObject(reply) }
        }
    }
}

private func withArgv<Result>(_ arguments: [[UInt8]], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> Result) -> Result {
    let buffers = arguments.map { argument -> UnsafeMutableRawPointer in
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(argument.count, 1), alignment: 1)
        argument.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: argument.count) }
        return buffer
    }
    defer { buffers.forEach { $0.deallocate() } }
    var argv: [UnsafePointer<CChar>?] = buffers.map { UnsafePointer($0.assumingMemoryBound(to: CChar.self)) }
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
        for index in 0..<value.elements {
            if let element = value.element[index] { elements.append(try convert(element)) }
        }
        return .array(elements)
    default:
        throw ProdReadyError(.protocolError, "unexpected Redis reply type \(value.type)")
    }
}
