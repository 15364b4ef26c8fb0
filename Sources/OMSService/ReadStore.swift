import Foundation
import OMSContract
public import ProdReadyCore
public import ProdReadyRedis

/// What the OMS keeps in Redis: each command's status history, and the read model (one document per instance).
/// Keys start with a prefix of the deployment's, so deployments and tests sharing a Redis stay apart.
public struct OMSReadStore: Sendable {
    public let redis: RedisClient
    public let prefix: String

    public init(redis: RedisClient, prefix: String) {
        self.redis = redis
        self.prefix = prefix
    }

    public enum CommandState: String, Sendable {
        case pending = "PENDING"
        case processing = "PROCESSING"
        case completed = "COMPLETED"
        case failed = "FAILED"

        var rank: Int {
            switch self {
            case .pending: 0
            case .processing: 1
            case .completed, .failed: 2
            }
        }
    }

    func commandKey(_ id: String) -> String { "\(prefix)cmd:\(id)" }
    func documentKey(_ database: String, _ classID: String, _ id: String) -> String { "\(prefix)doc:\(database):\(classID):\(id)" }

    /// Appends a status to a command's history. The history is a list every writer appends to, so the API's
    /// PENDING and a fast worker's PROCESSING can arrive in any order; the status read is the furthest one.
    public func record(command id: String, _ state: CommandState, tenant: String, aggregateID: String, error: String? = nil) async throws {
        var entry: [String: JSONValue] = ["status": .string(state.rawValue), "at": .string(OMSEvent.timestamp(Date())), "tenant": .string(tenant), "aggregate_id": .string(aggregateID)]
        if let error { entry["error"] = .string(error) }
        _ = try await redis.command(["RPUSH", commandKey(id), JSONValue.object(entry).text])
    }

    public struct CommandStatus: Sendable, Equatable {
        public var state: CommandState
        public var tenant: String
        public var aggregateID: String
        public var error: String?
        public var history: [(state: CommandState, at: String)]

        public static func == (lhs: Self, rhs: Self) -> Bool {
            lhs.state == rhs.state && lhs.error == rhs.error && lhs.history.map(\.state) == rhs.history.map(\.state)
        }

        public var json: JSONValue {
            var data: [String: JSONValue] = [
                "status": .string(state.rawValue),
                "result": ["aggregate_id": .string(aggregateID)],
                "history": .array(history.map { ["status": .string($0.state.rawValue), "at": .string($0.at)] }),
            ]
            data["error"] = error.map { .string($0) } ?? .null
            return .object(data)
        }
    }

    public func status(command id: String) async throws -> CommandStatus? {
        let value = try await redis.command(["LRANGE", commandKey(id), "0", "-1"])
        guard case .array(let items) = value, !items.isEmpty else { return nil }
        var entries: [(state: CommandState, at: String, tenant: String, aggregate: String, error: String?)] = []
        for item in items {
            guard let text = item.text, let entry = try? JSONValue.parse(Array(text.utf8)),
                let state = entry["status"]?.stringValue.flatMap(CommandState.init(rawValue:))
            else { continue }
            entries.append((state, entry["at"]?.stringValue ?? "", entry["tenant"]?.stringValue ?? "", entry["aggregate_id"]?.stringValue ?? "", entry["error"]?.stringValue))
        }
        // One entry per state, in lifecycle order: a redelivered command's repeats collapse.
        var seen: Set<CommandState> = []
        let history = entries.sorted { ($0.state.rank, $0.at) < ($1.state.rank, $1.at) }.filter { seen.insert($0.state).inserted }
        guard let last = history.last else { return nil }
        return CommandStatus(
            state: last.state, tenant: entries.first { !$0.tenant.isEmpty }?.tenant ?? "", aggregateID: last.aggregate, error: last.error,
            history: history.map { ($0.state, $0.at) })
    }

    /// The read model's document of one instance: its data at a version.
    public struct Document: Sendable, Equatable {
        public var data: JSONValue
        public var seq: Int64
        public var deleted: Bool
    }

    public func writeDocument(_ database: String, _ classID: String, _ id: String, _ document: Document) async throws {
        let value: JSONValue = ["data": document.data, "seq": .int(Int(document.seq)), "deleted": .bool(document.deleted)]
        // Only forward: a late, older event must not overwrite a newer document (compare in one Lua step).
        let script = """
            local current = redis.call('GET', KEYS[1])
            if current then
              local seq = tonumber(cjson.decode(current)['seq'])
              if seq and seq >= tonumber(ARGV[2]) then return 0 end
            end
            redis.call('SET', KEYS[1], ARGV[1])
            return 1
            """
        _ = try await redis.command(["EVAL", script, "1", documentKey(database, classID, id), value.text, String(document.seq)])
    }

    public func document(_ database: String, _ classID: String, _ id: String) async throws -> Document? {
        guard let bytes = try await redis.get(documentKey(database, classID, id)) else { return nil }
        let value = try JSONValue.parse(bytes)
        return Document(data: value["data"] ?? .null, seq: Int64(value["seq"]?.intValue ?? 0), deleted: value["deleted"]?.boolValue ?? false)
    }

    /// Documents of many instances in one round trip (nil where missing).
    public func documents(_ database: String, _ keys: [(classID: String, id: String)]) async throws -> [Document?] {
        guard !keys.isEmpty else { return [] }
        let value = try await redis.command(["MGET"] + keys.map { documentKey(database, $0.classID, $0.id) })
        guard case .array(let items) = value else { return keys.map { _ in nil } }
        return items.map { item in
            guard let text = item.text, let value = try? JSONValue.parse(Array(text.utf8)) else { return nil }
            return Document(data: value["data"] ?? .null, seq: Int64(value["seq"]?.intValue ?? 0), deleted: value["deleted"]?.boolValue ?? false)
        }
    }

    public func ping() async throws { try await redis.ping() }
}
