public import OMSContract
public import PostgresNIO
public import ProdReadyCore
import ProdReadyPostgres
public import ProdReadyRedis
public import ProdReadyS3
public import ProdReadyService
import Logging

/// Where an OMS deployment keeps its data, with clients to read it: what a convergence check looks at besides
/// the API. The Postgres client must be running (`withPostgresClient`).
public struct OMSStores: Sendable {
    public let s3: S3Client
    public let bucket: String
    public let redis: RedisClient
    public let redisPrefix: String
    public let postgres: PostgresClient
    public let schema: String

    public init(s3: S3Client, bucket: String, redis: RedisClient, redisPrefix: String, postgres: PostgresClient, schema: String) {
        self.s3 = s3
        self.bucket = bucket
        self.redis = redis
        self.redisPrefix = redisPrefix
        self.postgres = postgres
        self.schema = schema
    }

    static let logger = Logger(label: "oms-chaos")

    /// `processed_events` rows of `handler` for aggregates of `database`, by event id, with status and attempts.
    public func processedEvents(handler: String, database: String) async throws -> [String: (status: String, attempts: Int)] {
        let query: PostgresQuery = """
            SELECT event_id, status, attempt_count FROM \(unescaped: "\"\(schema)\"").processed_events
            WHERE handler = \(handler) AND aggregate_id LIKE \(database + ":%")
            """
        var result: [String: (status: String, attempts: Int)] = [:]
        for row in try await queryRows(postgres, query, deadline: .seconds(10), doing: "reading \(handler)'s processed events", logger: Self.logger) {
            let (id, status, attempts) = try row.decode((String, String, Int32).self)
            result[id] = (status, Int(attempts))
        }
        return result
    }

    /// Event ids the by-event-id index holds.
    public func indexedEventIDs() async throws -> Set<String> {
        let prefix = "indexes/by-event-id/"
        return Set(try await s3.listKeys(bucket: bucket, prefix: prefix).map { String($0.dropFirst(prefix.count).dropLast(".json".count)) })
    }

    /// Which of `instances` of `database`/`classID` have a read-model document.
    public func documentsExist(database: String, classID: String, instances: [String]) async throws -> Set<String> {
        var present: Set<String> = []
        for start in stride(from: 0, to: instances.count, by: 500) {
            let chunk = Array(instances[start..<min(start + 500, instances.count)])
            let value = try await redis.command(["MGET"] + chunk.map { "\(redisPrefix)doc:\(database):\(classID):\($0)" })
            guard case .array(let items) = value else { continue }
            for (instance, item) in zip(chunk, items) where item.text != nil { present.insert(instance) }
        }
        return present
    }
}

/// The seed's definition of a converged create command, all six checks: the by-event-id index holds the
/// command; the instance worker's registry row is `done`; the index holds the domain event with its
/// deterministic id; the projection worker's row for it is `done`; the read-model document exists; the graph
/// shows the node FULL.
public enum OMSConvergence {
    /// Effects observed for loss accounting, one entry per instance id: every instance of `commands` (instance id →
    /// command id, the acknowledged creates) that passes all six checks, and every other instance the graph shows
    /// at all (the effect of a create that was refused or never sent: unexpected).
    public static func observe(database: String, classID: String, commands: [String: String], oms: ServiceClient, stores: OMSStores) async throws -> [String] {
        let graph = try await oms.get("/api/v1/graph/\(database)?class=\(classID)")
        guard graph.status == 200, let nodes = graph.data?["nodes"]?.arrayValue else {
            throw ProdReadyError(.serverError, "graph of \(database)/\(classID) answered \(graph.status)")
        }
        let full = Set(nodes.filter { $0["data_status"] == "FULL" }.compactMap { $0["id"]?.stringValue })
        let shown = Set(nodes.compactMap { $0["id"]?.stringValue })
        let instanceRows = try await stores.processedEvents(handler: "oms-instance-worker", database: database)
        let projectionRows = try await stores.processedEvents(handler: "oms-projection-worker", database: database)
        let indexed = try await stores.indexedEventIDs()
        let documents = try await stores.documentsExist(database: database, classID: classID, instances: Array(commands.keys))
        var effects: [String] = []
        for (instance, command) in commands {
            let domain = UUIDv5.domainEventID(commandID: command, eventType: "INSTANCE_CREATED", aggregateID: "\(database):\(classID):\(instance)")
            if indexed.contains(command), instanceRows[command]?.status == "done", indexed.contains(domain), projectionRows[domain]?.status == "done",
                documents.contains(instance), full.contains(instance)
            {
                effects.append(instance)
            }
        }
        effects += shown.subtracting(commands.keys)
        return effects
    }

    /// Which of the six checks `instance`'s create passes, for the report of a lost one: where it got stuck.
    public static func diagnose(database: String, classID: String, instance: String, command: String, oms: ServiceClient, stores: OMSStores) async throws -> String {
        let domain = UUIDv5.domainEventID(commandID: command, eventType: "INSTANCE_CREATED", aggregateID: "\(database):\(classID):\(instance)")
        let indexed = try await stores.indexedEventIDs()
        let instanceRow = try await stores.processedEvents(handler: "oms-instance-worker", database: database)[command]
        let projectionRow = try await stores.processedEvents(handler: "oms-projection-worker", database: database)[domain]
        let document = try await stores.documentsExist(database: database, classID: classID, instances: [instance]).contains(instance)
        let node = (try await oms.get("/api/v1/graph/\(database)?class=\(classID)").data?["nodes"]?.arrayValue ?? []).first { $0["id"]?.stringValue == instance }
        let status = try await oms.get("/api/v1/commands/\(command)/status").data
        func row(_ value: (status: String, attempts: Int)?) -> String { value.map { "\($0.status) after \($0.attempts) attempt(s)" } ?? "no row" }
        return [
            "command \(command) \(indexed.contains(command) ? "in" : "NOT in") the index",
            "instance worker: \(row(instanceRow))",
            "domain event \(domain) \(indexed.contains(domain) ? "in" : "NOT in") the index",
            "projection worker: \(row(projectionRow))",
            "document \(document ? "exists" : "missing")",
            "graph: \(node?["data_status"]?.stringValue ?? "no node")",
            "status \(status?["status"]?.stringValue ?? "unknown") \(status?["history"].map { "\($0)" } ?? "")",
        ].joined(separator: ", ")
    }
}
