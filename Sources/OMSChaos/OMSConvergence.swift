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
        return try await processedRows(query, doing: "reading \(handler)'s processed events")
    }

    /// `processed_events` rows of `handler` for the events `eventIDs` (found by primary key: the cost grows with
    /// the ids asked for, not with the table).
    public func processedEvents(handler: String, eventIDs: [String]) async throws -> [String: (status: String, attempts: Int)] {
        guard !eventIDs.isEmpty else { return [:] }
        let query: PostgresQuery = """
            SELECT event_id, status, attempt_count FROM \(unescaped: "\"\(schema)\"").processed_events
            WHERE handler = \(handler) AND event_id = ANY(\(eventIDs))
            """
        return try await processedRows(query, doing: "reading \(handler)'s rows of \(eventIDs.count) events")
    }

    private func processedRows(_ query: PostgresQuery, doing: String) async throws -> [String: (status: String, attempts: Int)] {
        var result: [String: (status: String, attempts: Int)] = [:]
        for row in try await queryRows(postgres, query, deadline: .seconds(10), doing: doing, logger: Self.logger) {
            let (id, status, attempts) = try row.decode((String, String, Int32).self)
            result[id] = (status, Int(attempts))
        }
        return result
    }

    /// Which of `instanceIDs` the write model of `database` holds (in any class, deleted or not): the effect a
    /// refused create must not have.
    public func writtenInstances(database: String, among instanceIDs: [String]) async throws -> Set<String> {
        guard !instanceIDs.isEmpty else { return [] }
        let query: PostgresQuery = """
            SELECT instance_id FROM \(unescaped: "\"\(schema)\"").oms_instances
            WHERE database = \(database) AND instance_id = ANY(\(instanceIDs))
            """
        var written: Set<String> = []
        for row in try await queryRows(postgres, query, deadline: .seconds(10), doing: "looking up \(instanceIDs.count) instances", logger: Self.logger) {
            written.insert(try row.decode(String.self))
        }
        return written
    }

    /// Event ids the by-event-id index holds (one listing of the whole index: for a final check, not for polling).
    public func indexedEventIDs() async throws -> Set<String> {
        let prefix = "indexes/by-event-id/"
        return Set(try await s3.listKeys(bucket: bucket, prefix: prefix).map { String($0.dropFirst(prefix.count).dropLast(".json".count)) })
    }

    /// Which of `eventIDs` the by-event-id index holds, one HEAD each, `parallel` at a time.
    public func indexed(_ eventIDs: [String], parallel: Int = 8) async throws -> Set<String> {
        try await withThrowingTaskGroup(of: String?.self) { group in
            var present: Set<String> = []
            for (index, id) in eventIDs.enumerated() {
                if index >= parallel, let found = try await group.next() { found.map { _ = present.insert($0) } }
                group.addTask { try await s3.objectExists(bucket: bucket, key: "indexes/by-event-id/\(id).json") ? id : nil }
            }
            for try await found in group { found.map { _ = present.insert($0) } }
            return present
        }
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
    /// Which of `creates` pass all six checks. The cheap checks come first (the graph of each class involved,
    /// registry rows by primary key, one MGET per class); only creates that passed them cost two index HEADs. A
    /// poll's cost grows with the creates asked about, so callers ask only about those not yet converged.
    public static func converged(database: String, creates: [OMSCreate], oms: ServiceClient, stores: OMSStores) async throws -> Set<String> {
        guard !creates.isEmpty else { return [] }
        let byClass = Dictionary(grouping: creates, by: \.classID)
        var full: Set<String> = []
        var documents: Set<String> = []
        for (classID, members) in byClass {
            full.formUnion(try await graph(database: database, classID: classID, oms: oms).full)
            documents.formUnion(try await stores.documentsExist(database: database, classID: classID, instances: members.map(\.instance)))
        }
        let reads = Reads(
            database: database, full: full, documents: documents,
            instanceRows: try await stores.processedEvents(handler: OMSProcesses.instanceWorker, eventIDs: creates.map(\.command)),
            projectionRows: try await stores.processedEvents(handler: OMSProcesses.projectionWorker, eventIDs: creates.map { $0.domainEventID(database: database) }))
        let candidates = creates.filter(reads.registryAndReadModelPass)
        let indexed = try await stores.indexed(candidates.flatMap { [$0.command, $0.domainEventID(database: database)] })
        return Set(candidates.filter { reads.indexPasses($0, indexed: indexed) }.map(\.instance))
    }

    /// What the six checks read for a set of creates, and the checks themselves.
    struct Reads {
        let database: String
        /// Instances the graph shows FULL, and those with a read-model document.
        var full: Set<String>
        var documents: Set<String>
        let instanceRows: [String: (status: String, attempts: Int)]
        let projectionRows: [String: (status: String, attempts: Int)]

        /// Four of the six: both registry rows `done`, the document there, the node FULL.
        func registryAndReadModelPass(_ create: OMSCreate) -> Bool {
            full.contains(create.instance) && documents.contains(create.instance) && instanceRows[create.command]?.status == "done"
                && projectionRows[create.domainEventID(database: database)]?.status == "done"
        }

        /// The other two: the index holds the command and its domain event.
        func indexPasses(_ create: OMSCreate, indexed: Set<String>) -> Bool {
            indexed.contains(create.command) && indexed.contains(create.domainEventID(database: database))
        }
    }

    /// Effects observed for loss accounting, everything read afresh (for a final check; too costly to poll on a
    /// long run): every create of `creates` that passes all six checks, and every other instance the graph of
    /// `classes` shows (the effect of a create that was refused or never sent: unexpected).
    public static func observeAll(database: String, classes: [String], creates: [OMSCreate], oms: ServiceClient, stores: OMSStores) async throws -> [String] {
        var reads = Reads(
            database: database, full: [], documents: [],
            instanceRows: try await stores.processedEvents(handler: OMSProcesses.instanceWorker, database: database),
            projectionRows: try await stores.processedEvents(handler: OMSProcesses.projectionWorker, database: database))
        let indexed = try await stores.indexedEventIDs()
        let byClass = Dictionary(grouping: creates, by: \.classID)
        var unexpected: [String] = []
        for classID in Set(classes).union(byClass.keys) {
            let members = (byClass[classID] ?? []).map(\.instance)
            let (full, shown) = try await graph(database: database, classID: classID, oms: oms)
            reads.full.formUnion(full)
            reads.documents.formUnion(try await stores.documentsExist(database: database, classID: classID, instances: members))
            unexpected += shown.subtracting(members)
        }
        return creates.filter { reads.registryAndReadModelPass($0) && reads.indexPasses($0, indexed: indexed) }.map(\.instance) + unexpected
    }

    /// The nodes the graph of one class shows, and those of them FULL.
    static func graph(database: String, classID: String, oms: ServiceClient) async throws -> (full: Set<String>, shown: Set<String>) {
        let graph = try await oms.get("/api/v1/graph/\(database)?class=\(classID)")
        guard graph.status == 200, let nodes = graph.data?["nodes"]?.arrayValue else {
            throw ProdReadyError(.serverError, "graph of \(database)/\(classID) answered \(graph.status)")
        }
        return (Set(nodes.filter { $0["data_status"] == "FULL" }.compactMap { $0["id"]?.stringValue }), Set(nodes.compactMap { $0["id"]?.stringValue }))
    }

    /// Which of the six checks `instance`'s create passes, for the report of a lost one: where it got stuck.
    public static func diagnose(database: String, classID: String, instance: String, command: String, oms: ServiceClient, stores: OMSStores) async throws -> String {
        let domain = UUIDv5.domainEventID(commandID: command, eventType: "INSTANCE_CREATED", aggregateID: "\(database):\(classID):\(instance)")
        let indexed = try await stores.indexed([command, domain])
        let instanceRow = try await stores.processedEvents(handler: OMSProcesses.instanceWorker, eventIDs: [command])[command]
        let projectionRow = try await stores.processedEvents(handler: OMSProcesses.projectionWorker, eventIDs: [domain])[domain]
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

/// One acknowledged create: the instance it made (the id its effect carries), its command and its class.
public struct OMSCreate: Sendable, Hashable {
    public var instance: String
    public var command: String
    public var classID: String

    public init(instance: String, command: String, classID: String) {
        self.instance = instance
        self.command = command
        self.classID = classID
    }

    /// The id of the `INSTANCE_CREATED` domain event the instance worker derives from the command.
    public func domainEventID(database: String) -> String {
        UUIDv5.domainEventID(commandID: command, eventType: "INSTANCE_CREATED", aggregateID: "\(database):\(classID):\(instance)")
    }
}
