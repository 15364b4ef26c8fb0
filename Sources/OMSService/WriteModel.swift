public import Logging
public import OMSContract
public import PostgresNIO
public import ProdReadyCore
public import ProdReadyPostgres
import Foundation
import ProdReadyReliability

/// The OMS's write model in Postgres: databases, classes and instances with their versions. The instance worker
/// writes it; the API reads it to validate commands and to answer counts and reads.
public struct OMSWriteModel: Sendable {
    public let client: PostgresClient
    public let schema: SQLIdentifier
    let logger: Logger
    /// How long one statement may take before it counts as Postgres being unavailable.
    let deadline: Duration
    /// Where applied commands are audited; nil writes no audit rows.
    let auditTrail: OMSAuditTrail?

    public init(client: PostgresClient, schema: SQLIdentifier, logger: Logger, deadline: Duration = .seconds(10), auditTrail: OMSAuditTrail? = nil) {
        self.client = client
        self.schema = schema
        self.logger = logger
        self.deadline = deadline
        self.auditTrail = auditTrail
    }

    var s: String { schema.quoted }

    func rows(_ query: PostgresQuery, _ doing: String) async throws -> [PostgresRow] {
        try await queryRows(client, query, deadline: deadline, doing: doing, logger: logger)
    }

    // MARK: Ownership (written by the API when it accepts a database)

    /// Records that `tenant` owns `database`; false when the name is taken.
    public func claimDatabaseName(_ database: String, tenant: String) async throws -> Bool {
        let query: PostgresQuery = """
            INSERT INTO \(unescaped: s).oms_database_owners (name, tenant) VALUES (\(database), \(tenant))
            ON CONFLICT (name) DO NOTHING RETURNING name
            """
        return try await !rows(query, "claiming the database name \(database)").isEmpty
    }

    public func releaseDatabaseName(_ database: String) async throws {
        _ = try await rows("DELETE FROM \(unescaped: s).oms_database_owners WHERE name = \(database)", "releasing the database name \(database)")
    }

    /// The tenant that owns `database`, nil when nobody does.
    public func owner(of database: String) async throws -> String? {
        try await rows("SELECT tenant FROM \(unescaped: s).oms_database_owners WHERE name = \(database)", "reading the owner of \(database)").first?.decode(String.self)
    }

    // MARK: Reads

    /// The last sequence the database's event log reserved (0 when none).
    public func eventLogHead(_ database: String, handler: String) async throws -> Int64 {
        let query: PostgresQuery = "SELECT last_sequence FROM \(unescaped: s).aggregate_versions WHERE handler = \(handler) AND aggregate_id = \(database)"
        return try await rows(query, "reading the head of \(database)'s event log").first?.decode(Int64.self) ?? 0
    }

    public struct DatabaseRow: Sendable, Equatable {
        public var name: String
        public var description: String
        public var tenant: String
        public var seq: Int64
        public var deleted: Bool
    }

    public func database(_ name: String) async throws -> DatabaseRow? {
        let query: PostgresQuery = "SELECT name, description, tenant, seq, deleted FROM \(unescaped: s).oms_databases WHERE name = \(name)"
        guard let row = try await rows(query, "reading database \(name)").first else { return nil }
        let (name, description, tenant, seq, deleted) = try row.decode((String, String, String, Int64, Bool).self)
        return DatabaseRow(name: name, description: description, tenant: tenant, seq: seq, deleted: deleted)
    }

    public struct ClassRow: Sendable, Equatable {
        public var id: String
        public var label: String
        public var properties: [OMSProperty]
        public var seq: Int64
    }

    public func classes(of database: String) async throws -> [ClassRow] {
        let query: PostgresQuery = "SELECT class_id, label, properties::text, seq FROM \(unescaped: s).oms_classes WHERE database = \(database) ORDER BY class_id"
        return try await rows(query, "reading the classes of \(database)").map(Self.classRow(from:))
    }

    /// One class, read by its key: every instance command validates against it, so it must not read them all.
    public func classRow(_ database: String, _ classID: String) async throws -> ClassRow? {
        let query: PostgresQuery = """
            SELECT class_id, label, properties::text, seq FROM \(unescaped: s).oms_classes WHERE database = \(database) AND class_id = \(classID)
            """
        return try await rows(query, "reading class \(classID) of \(database)").first.map(Self.classRow(from:))
    }

    static func classRow(from row: PostgresRow) throws -> ClassRow {
        let (id, label, properties, seq) = try row.decode((String, String, String, Int64).self)
        return ClassRow(id: id, label: label, properties: try JSONDecoder().decode([OMSProperty].self, from: Data(properties.utf8)), seq: seq)
    }

    public struct InstanceRow: Sendable, Equatable {
        public var classID: String
        public var id: String
        public var data: JSONValue
        public var seq: Int64
        public var deleted: Bool
    }

    public func instance(_ database: String, _ classID: String, _ id: String) async throws -> InstanceRow? {
        let query: PostgresQuery = """
            SELECT class_id, instance_id, data::text, seq, deleted FROM \(unescaped: s).oms_instances
            WHERE database = \(database) AND class_id = \(classID) AND instance_id = \(id)
            """
        return try await rows(query, "reading instance \(id)").first.map(Self.instance(from:))
    }

    /// Live instances of a database, of one class when given (at most `limit`).
    public func instances(of database: String, classID: String?, limit: Int = 10_000) async throws -> [InstanceRow] {
        let query: PostgresQuery = """
            SELECT class_id, instance_id, data::text, seq, deleted FROM \(unescaped: s).oms_instances
            WHERE database = \(database) AND (\(classID)::text IS NULL OR class_id = \(classID)) AND NOT deleted
            ORDER BY class_id, instance_id LIMIT \(limit)
            """
        return try await rows(query, "listing the instances of \(database)").map(Self.instance(from:))
    }

    public func count(_ database: String, _ classID: String) async throws -> Int {
        let query: PostgresQuery = "SELECT count(*)::bigint FROM \(unescaped: s).oms_instances WHERE database = \(database) AND class_id = \(classID) AND NOT deleted"
        return Int(try await rows(query, "counting \(classID) in \(database)").first?.decode(Int64.self) ?? 0)
    }

    static func instance(from row: PostgresRow) throws -> InstanceRow {
        let (classID, id, data, seq, deleted) = try row.decode((String, String, String, Int64, Bool).self)
        return InstanceRow(classID: classID, id: id, data: try JSONValue.parse(Array(data.utf8)), seq: seq, deleted: deleted)
    }

    // MARK: Applying commands (the instance worker)

    /// One write of `apply`, ending in `RETURNING`. With an audit trail it runs in one transaction with the audit
    /// outbox row, which is enqueued only when the write changed a row: a redelivered command changes nothing and
    /// is not audited twice.
    func write(_ query: PostgresQuery, _ doing: String, audit: () throws -> OutboxMessage?) async throws {
        guard let outbox = auditTrail?.outbox, let message = try audit() else {
            _ = try await rows(query, doing)
            return
        }
        let logger = self.logger
        try await withDeadline(deadline, timeoutError: { ProdReadyError(.timeout, "\(doing): no answer from Postgres within \(self.deadline)", retriable: true) }) {
            try await outbox.transaction { transaction in
                let changed = try await transaction.connection.query(query, logger: logger).collect()
                if !changed.isEmpty { try await transaction.enqueue(message) }
            }
        }
    }

    /// Applies a command event, idempotently: each write only moves a row forward to the command's aggregate
    /// sequence, so a redelivered command changes nothing. Returns the domain event's payload, or throws
    /// `OMSValidationError` when the command cannot apply (it then ends FAILED).
    public func apply(_ command: OMSEvent) async throws -> JSONValue {
        guard let type = OMSCommandType(rawValue: command.eventType) else {
            throw OMSValidationError(field: "event_type", message: "unknown command type \(command.eventType)")
        }
        let seq = command.aggregateSequence
        let payload = command.payload
        let database = command.database
        switch type {
        case .createDatabase:
            let description = payload["description"]?.stringValue ?? ""
            let query: PostgresQuery = """
                INSERT INTO \(unescaped: s).oms_databases AS d (name, description, tenant, seq) VALUES (\(database), \(description), \(command.tenant), \(seq))
                ON CONFLICT (name) DO UPDATE SET description = excluded.description, seq = excluded.seq, deleted = false, updated_at = now()
                WHERE d.seq < excluded.seq RETURNING 1
                """
            try await write(query, "creating database \(database)") { try auditTrail?.applied(command, type, before: nil, after: ["description": .string(description)]) }
            return ["database": .string(database), "description": .string(description), "seq": .int(Int(seq))]
        case .deleteDatabase:
            try await write("UPDATE \(unescaped: s).oms_databases SET deleted = true, seq = \(seq), updated_at = now() WHERE name = \(database) AND seq < \(seq) RETURNING 1", "deleting database \(database)") {
                try auditTrail?.applied(command, type, before: nil, after: nil)
            }
            return ["database": .string(database), "seq": .int(Int(seq))]
        case .createOntology:
            guard let existing = try await self.database(database), !existing.deleted else {
                throw OMSValidationError(field: "database", message: "database '\(database)' does not exist")
            }
            let classID = payload["id"]?.stringValue ?? ""
            let label = payload["label"]?.stringValue ?? classID
            let properties = payload["properties"] ?? .array([])
            let query: PostgresQuery = """
                INSERT INTO \(unescaped: s).oms_classes (database, class_id, label, properties, seq)
                VALUES (\(database), \(classID), \(label), \(properties.text)::jsonb, \(seq)) ON CONFLICT DO NOTHING RETURNING 1
                """
            try await write(query, "creating class \(classID) in \(database)") { try auditTrail?.applied(command, type, before: nil, after: ["label": .string(label), "properties": properties]) }
            return ["class": .string(classID), "label": .string(label), "properties": properties, "seq": .int(Int(seq))]
        case .createInstance, .updateInstance, .deleteInstance:
            let classID = payload["class"]?.stringValue ?? ""
            let id = payload["instance_id"]?.stringValue ?? ""
            let data = payload["data"] ?? [:]
            guard let classRow = try await classRow(database, classID) else {
                throw OMSValidationError(field: "class", message: "class '\(classID)' does not exist in '\(database)'")
            }
            if type != .deleteInstance {
                try OMSValidation.validate(data.objectValue ?? [:], against: classRow.properties)
            }
            let current = try await instance(database, classID, id)
            if let current, current.seq >= seq {
                // Applied before (a redelivery): the same outcome again.
                return ["class": .string(classID), "instance_id": .string(id), "data": current.data, "seq": .int(Int(current.seq)), "deleted": .bool(current.deleted)]
            }
            switch type {
            case .createInstance:
                let query: PostgresQuery = """
                    INSERT INTO \(unescaped: s).oms_instances AS i (database, class_id, instance_id, data, seq) VALUES (\(database), \(classID), \(id), \(data.text)::jsonb, \(seq))
                    ON CONFLICT (database, class_id, instance_id) DO UPDATE SET data = excluded.data, seq = excluded.seq, deleted = false, updated_at = now()
                    WHERE i.seq < excluded.seq RETURNING 1
                    """
                try await write(query, "creating instance \(id)") { try auditTrail?.applied(command, type, before: nil, after: data) }
            default:
                guard let current, !current.deleted else {
                    throw OMSValidationError(field: "instance_id", message: "instance '\(id)' of '\(classID)' does not exist")
                }
                let deleted = type == .deleteInstance
                let newData = deleted ? current.data : data
                let query: PostgresQuery = """
                    UPDATE \(unescaped: s).oms_instances SET data = \(newData.text)::jsonb, seq = \(seq), deleted = \(deleted), updated_at = now()
                    WHERE database = \(database) AND class_id = \(classID) AND instance_id = \(id) AND seq < \(seq) RETURNING 1
                    """
                try await write(query, "\(deleted ? "deleting" : "updating") instance \(id)") {
                    try auditTrail?.applied(command, type, before: current.data, after: deleted ? nil : newData)
                }
                return ["class": .string(classID), "instance_id": .string(id), "data": newData, "seq": .int(Int(seq)), "deleted": .bool(deleted)]
            }
            return ["class": .string(classID), "instance_id": .string(id), "data": data, "seq": .int(Int(seq)), "deleted": false]
        }
    }
}
