import ProdReadyCore

/// One entry of a Redis stream.
public struct RedisStreamEntry: Sendable, Equatable {
    public var id: String
    /// Field names and values in the order they were added.
    public var fields: [RedisStreamField]

    public init(id: String, fields: [RedisStreamField]) {
        self.id = id
        self.fields = fields
    }

    /// The first value of `name` as UTF-8 text.
    public func text(_ name: String) -> String? {
        fields.first { $0.name == name }.map { String(decoding: $0.value, as: UTF8.self) }
    }
}

public struct RedisStreamField: Sendable, Equatable {
    public var name: String
    public var value: [UInt8]

    public init(_ name: String, _ value: [UInt8]) {
        self.name = name
        self.value = value
    }

    public init(_ name: String, _ text: String) {
        self.init(name, Array(text.utf8))
    }
}

/// A pending (delivered, not acknowledged) entry of a consumer group, from the extended XPENDING form.
public struct RedisPendingEntry: Sendable, Equatable {
    public var id: String
    public var consumer: String
    public var idle: Duration
    public var deliveries: Int
}

/// What XAUTOCLAIM returns: the entries now owned by the caller, where to continue, and ids that were pending
/// but whose entries have been deleted from the stream.
public struct RedisAutoClaim: Sendable, Equatable {
    public var nextStart: String
    public var entries: [RedisStreamEntry]
    public var deletedIDs: [String]
}

/// Which end of a list LMOVE takes from or puts to.
public enum RedisListEnd: String, Sendable {
    case left = "LEFT"
    case right = "RIGHT"
}

/// The commands queues and locks need, typed. Keys are bytes so any key works (Redis keys are binary); the
/// `String` overloads are for the common case.
extension RedisCommandRunner {
    // MARK: - Server

    /// PING → PONG; the round trip health probes use.
    public func ping() async throws {
        let reply = try await command(["PING"])
        guard reply.text == "PONG" else { throw ProdReadyError(.protocolError, "PING answered \(reply)") }
    }

    /// INFO [section] as key → value (comment and blank lines dropped).
    public func info(_ section: String? = nil) async throws -> [String: String] {
        let reply = try await command(["INFO"] + (section.map { [$0] } ?? []))
        guard let text = reply.text else { throw ProdReadyError(.protocolError, "INFO answered \(reply)") }
        var result: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            result[String(line[..<colon])] = String(line[line.index(after: colon)...])
        }
        return result
    }

    // MARK: - Keys

    /// SET, optionally only if absent (NX) and with an expiry (PX). Returns whether the value was set.
    @discardableResult
    public func set(_ key: String, _ value: [UInt8], onlyIfAbsent: Bool = false, expiresAfter: Duration? = nil) async throws -> Bool {
        var arguments: [[UInt8]] = [Array("SET".utf8), Array(key.utf8), value]
        if let expiresAfter {
            let milliseconds = expiresAfter.wholeMilliseconds
            guard milliseconds > 0 else { throw ProdReadyError(.invalidArgument, "an expiry must be at least 1 ms, got \(expiresAfter)") }
            arguments += [Array("PX".utf8), Array(String(milliseconds).utf8)]
        }
        if onlyIfAbsent { arguments.append(Array("NX".utf8)) }
        let reply = try await command(bytes: arguments)
        switch reply {
        case .status("OK"): return true
        case .null: return false
        default: throw ProdReadyError(.protocolError, "SET answered \(reply)")
        }
    }

    @discardableResult
    public func set(_ key: String, _ value: String, onlyIfAbsent: Bool = false, expiresAfter: Duration? = nil) async throws -> Bool {
        try await set(key, Array(value.utf8), onlyIfAbsent: onlyIfAbsent, expiresAfter: expiresAfter)
    }

    /// GET: the value, or nil when the key does not exist.
    public func get(_ key: String) async throws -> [UInt8]? {
        let reply = try await command(["GET", key])
        switch reply {
        case .string(let bytes): return bytes
        case .null: return nil
        default: throw ProdReadyError(.protocolError, "GET answered \(reply)")
        }
    }

    /// DEL: how many of `keys` existed.
    @discardableResult
    public func delete(_ keys: [String]) async throws -> Int {
        guard !keys.isEmpty else { return 0 }
        return try await integer(["DEL"] + keys)
    }

    /// INCR: the new value.
    public func increment(_ key: String) async throws -> Int64 {
        let reply = try await command(["INCR", key])
        guard let value = reply.integer else { throw ProdReadyError(.protocolError, "INCR answered \(reply)") }
        return value
    }

    /// EXPIRE in whole seconds (PEXPIRE for less); false if the key does not exist.
    @discardableResult
    public func expire(_ key: String, after duration: Duration) async throws -> Bool {
        let milliseconds = duration.wholeMilliseconds
        guard milliseconds > 0 else { throw ProdReadyError(.invalidArgument, "an expiry must be at least 1 ms, got \(duration)") }
        return try await integer(["PEXPIRE", key, String(milliseconds)]) == 1
    }

    /// Every key matching `pattern`, collected with SCAN (never KEYS, which blocks the server).
    public func scanKeys(matching pattern: String, batch: Int = 500) async throws -> [String] {
        guard batch > 0 else { throw ProdReadyError(.invalidArgument, "SCAN batch must be positive, got \(batch)") }
        var keys: [String] = []
        var cursor = "0"
        repeat {
            let reply = try await command(["SCAN", cursor, "MATCH", pattern, "COUNT", String(batch)])
            guard let parts = reply.array, parts.count == 2, let next = parts[0].text, let found = parts[1].array else {
                throw ProdReadyError(.protocolError, "SCAN answered \(reply)")
            }
            keys += found.compactMap(\.text)
            cursor = next
        } while cursor != "0"
        return keys
    }

    // MARK: - Lists

    /// LPUSH: the list's new length.
    @discardableResult
    public func leftPush(_ key: String, _ values: [[UInt8]]) async throws -> Int {
        guard !values.isEmpty else { throw ProdReadyError(.invalidArgument, "LPUSH needs at least one value") }
        return try await integer(bytes: [Array("LPUSH".utf8), Array(key.utf8)] + values)
    }

    /// LMOVE, or BLMOVE when `blockingFor` is given (zero blocks forever): the moved element, or nil when the
    /// source stayed empty.
    public func move(from source: String, to destination: String, sourceEnd: RedisListEnd = .right, destinationEnd: RedisListEnd = .left, blockingFor: Duration? = nil) async throws -> [UInt8]? {
        let reply: RedisValue
        if let blockingFor {
            guard blockingFor >= .zero else { throw ProdReadyError(.invalidArgument, "BLMOVE timeout must not be negative") }
            let seconds = String(format: blockingFor.milliseconds / 1000)
            reply = try await command(bytes: ["BLMOVE", source, destination, sourceEnd.rawValue, destinationEnd.rawValue, seconds].map { Array($0.utf8) }, blockingFor: blockingFor)
        } else {
            reply = try await command(["LMOVE", source, destination, sourceEnd.rawValue, destinationEnd.rawValue])
        }
        switch reply {
        case .string(let bytes): return bytes
        case .null: return nil
        default: throw ProdReadyError(.protocolError, "LMOVE answered \(reply)")
        }
    }

    /// LREM: removes up to `count` occurrences of `value` (0: all); returns how many were removed.
    @discardableResult
    public func remove(_ value: [UInt8], from key: String, count: Int = 1) async throws -> Int {
        try await integer(bytes: [Array("LREM".utf8), Array(key.utf8), Array(String(count).utf8), value])
    }

    /// LLEN.
    public func length(ofList key: String) async throws -> Int {
        try await integer(["LLEN", key])
    }

    // MARK: - Streams

    /// XADD with an automatic id (or `id`), optionally capping the stream at about `maximumLength` entries.
    @discardableResult
    public func streamAdd(_ key: String, id: String = "*", fields: [RedisStreamField], maximumLength: Int? = nil) async throws -> String {
        guard !fields.isEmpty else { throw ProdReadyError(.invalidArgument, "XADD needs at least one field") }
        var arguments: [[UInt8]] = [Array("XADD".utf8), Array(key.utf8)]
        if let maximumLength { arguments += [Array("MAXLEN".utf8), Array("~".utf8), Array(String(maximumLength).utf8)] }
        arguments.append(Array(id.utf8))
        for field in fields { arguments += [Array(field.name.utf8), field.value] }
        let reply = try await command(bytes: arguments)
        guard let added = reply.text else { throw ProdReadyError(.protocolError, "XADD answered \(reply)") }
        return added
    }

    /// XLEN.
    public func streamLength(_ key: String) async throws -> Int {
        try await integer(["XLEN", key])
    }

    /// XGROUP CREATE … MKSTREAM; returns false when the group already exists.
    @discardableResult
    public func createGroup(_ group: String, on key: String, startingAt id: String = "0") async throws -> Bool {
        do {
            try await command(["XGROUP", "CREATE", key, group, id, "MKSTREAM"])
            return true
        } catch let error as ProdReadyError where error.message.contains("BUSYGROUP") {
            return false
        }
    }

    /// XREADGROUP: up to `count` entries never delivered to this group (`>`), waiting up to `blockingFor` for
    /// the first; empty when none arrived.
    public func readGroup(_ group: String, consumer: String, stream key: String, count: Int = 100, blockingFor: Duration? = nil) async throws -> [RedisStreamEntry] {
        guard count > 0 else { throw ProdReadyError(.invalidArgument, "XREADGROUP count must be positive, got \(count)") }
        var arguments = ["XREADGROUP", "GROUP", group, consumer, "COUNT", String(count)]
        if let blockingFor { arguments += ["BLOCK", String(max(1, blockingFor.wholeMilliseconds))] }
        arguments += ["STREAMS", key, ">"]
        let reply = try await command(bytes: arguments.map { Array($0.utf8) }, blockingFor: blockingFor)
        if reply == .null { return [] }
        guard let streams = reply.array else { throw ProdReadyError(.protocolError, "XREADGROUP answered \(reply)") }
        return try streams.flatMap { stream -> [RedisStreamEntry] in
            guard let parts = stream.array, parts.count == 2, let entries = parts[1].array else {
                throw ProdReadyError(.protocolError, "XREADGROUP stream element \(stream)")
            }
            return try entries.map(streamEntry)
        }
    }

    /// XACK: how many of `ids` were pending and are now acknowledged.
    @discardableResult
    public func acknowledge(_ ids: [String], group: String, stream key: String) async throws -> Int {
        guard !ids.isEmpty else { return 0 }
        return try await integer(["XACK", key, group] + ids)
    }

    /// XPENDING's extended form: pending entries (optionally of one consumer, optionally idle at least `minimumIdle`).
    public func pending(group: String, stream key: String, minimumIdle: Duration? = nil, consumer: String? = nil, count: Int = 100) async throws -> [RedisPendingEntry] {
        var arguments = ["XPENDING", key, group]
        if let minimumIdle { arguments += ["IDLE", String(minimumIdle.wholeMilliseconds)] }
        arguments += ["-", "+", String(count)]
        if let consumer { arguments.append(consumer) }
        let reply = try await command(arguments)
        guard let entries = reply.array else { throw ProdReadyError(.protocolError, "XPENDING answered \(reply)") }
        return try entries.map { entry in
            guard let parts = entry.array, parts.count == 4, let id = parts[0].text, let owner = parts[1].text,
                  let idle = parts[2].integer, let deliveries = parts[3].integer else {
                throw ProdReadyError(.protocolError, "XPENDING entry \(entry)")
            }
            return RedisPendingEntry(id: id, consumer: owner, idle: .milliseconds(idle), deliveries: Int(deliveries))
        }
    }

    /// XAUTOCLAIM: takes over entries pending for at least `minimumIdle` (e.g. held by a consumer that died).
    public func autoClaim(group: String, consumer: String, stream key: String, minimumIdle: Duration, start: String = "0-0", count: Int = 100) async throws -> RedisAutoClaim {
        guard count > 0 else { throw ProdReadyError(.invalidArgument, "XAUTOCLAIM count must be positive, got \(count)") }
        let reply = try await command(["XAUTOCLAIM", key, group, consumer, String(minimumIdle.wholeMilliseconds), start, "COUNT", String(count)])
        guard let parts = reply.array, parts.count >= 2, let next = parts[0].text, let entries = parts[1].array else {
            throw ProdReadyError(.protocolError, "XAUTOCLAIM answered \(reply)")
        }
        let deleted = parts.count > 2 ? (parts[2].array ?? []).compactMap(\.text) : []
        // Entries deleted from the stream come back as nil elements (Redis 6.2) instead of in the third part.
        return RedisAutoClaim(nextStart: next, entries: try entries.filter { $0 != .null }.map(streamEntry), deletedIDs: deleted)
    }

    // MARK: - Helpers

    private func integer(_ arguments: [String]) async throws -> Int {
        try await integer(bytes: arguments.map { Array($0.utf8) })
    }

    private func integer(bytes arguments: [[UInt8]]) async throws -> Int {
        let reply = try await command(bytes: arguments)
        guard case .integer(let value) = reply else {
            throw ProdReadyError(.protocolError, "\(RedisConnection.name(arguments)) answered \(reply)")
        }
        return Int(value)
    }
}

private func streamEntry(_ value: RedisValue) throws -> RedisStreamEntry {
    guard let parts = value.array, parts.count == 2, let id = parts[0].text, let flat = parts[1].array, flat.count % 2 == 0 else {
        throw ProdReadyError(.protocolError, "malformed stream entry \(value)")
    }
    var fields: [RedisStreamField] = []
    for index in stride(from: 0, to: flat.count, by: 2) {
        guard let name = flat[index].text, let bytes = flat[index + 1].bytes else {
            throw ProdReadyError(.protocolError, "malformed stream field in entry \(id)")
        }
        fields.append(RedisStreamField(name, bytes))
    }
    return RedisStreamEntry(id: id, fields: fields)
}

private extension String {
    init(format value: Double) {
        // BLMOVE takes seconds with a fraction; three decimals are Redis' millisecond resolution.
        let milliseconds = Int((value * 1000).rounded())
        let fraction = String(milliseconds % 1000)
        self = "\(milliseconds / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)"
    }
}
