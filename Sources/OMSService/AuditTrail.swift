public import AuditContract
import Foundation
public import Logging
public import OMSContract
import ProdReadyCore
public import ProdReadyReliability
public import ProdReadyService

/// What the OMS tells auditors (SPEC-audit): an audit outbox row for every write the instance worker applies,
/// committed in the same transaction as the write, and one for each write the API refuses for want of a valid
/// token (401) or of the role (403), or for an optimistic-concurrency conflict (409). The outbox relay
/// (`oms-outbox-relay`) publishes them to the `AUDIT` stream.
///
/// The OMS accepts a command by storing it in S3, which cannot share a transaction with Postgres; the write the
/// audit row is committed with is the write-model change the command makes, so an audited change exists and an
/// existing change is audited, whatever crashes in between.
public struct OMSAuditTrail: Sendable {
    public let outbox: Outbox
    public let subjects: AuditSubjects
    /// Where records of writes that are not commands go: refusals arrive in bursts (a credential-stuffing run),
    /// and this writer stores each burst's rows together, a statement per round trip instead of one per request.
    let outsideCommands: OutboxGroupWriter
    let logger: Logger
    public static let source = "oms"

    public init(outbox: Outbox, subjects: AuditSubjects, logger: Logger) {
        self.outbox = outbox
        self.subjects = subjects
        self.outsideCommands = OutboxGroupWriter(client: outbox.client, schema: outbox.schema, logger: logger)
        self.logger = logger
    }

    /// The audit event of `command` applied, with the instance's data before (updates and deletes) and after. Its
    /// id derives from the command, so whoever applies it again produces the same event.
    func applied(_ command: OMSEvent, _ type: OMSCommandType, before: JSONValue?, after: JSONValue?) throws -> OutboxMessage {
        let (eventType, action, target) = Self.describe(command, type)
        var changes: [String: JSONValue] = [:]
        if let before { changes["before"] = before }
        if let after { changes["after"] = after }
        let record = AuditRecord(
            eventType: eventType, action: action, actor: AuditActor(id: command.actor, username: command.actor, tenantID: command.tenant), target: target,
            durationMS: max(0, Int(Date().timeIntervalSince(command.occurredAt) * 1000)), requestID: command.correlationID,
            changes: changes.isEmpty ? nil : .object(changes),
            metadata: ["command_id": .string(command.commandID), "command_type": .string(command.eventType), "database": .string(command.database), "aggregate_seq": .int(Int(command.aggregateSequence))],
            tags: [Self.source, "database:\(command.database)"])
        return try message(.audit(id: Self.eventID(commandID: command.commandID, aggregateID: command.aggregateID), at: Date(), correlationID: command.correlationID, causationID: command.commandID, record))
    }

    /// The audit event id of an applied command: derived from the command, so whoever applies it produces the same.
    public static func eventID(commandID: String, aggregateID: String) -> String {
        UUIDv5.domainEventID(commandID: commandID, eventType: "AUDIT", aggregateID: aggregateID)
    }

    /// Records a refused write; a failure to record is logged (the refusal itself stands either way).
    func refused(_ record: AuditRecord, requestID: String) async {
        await recordOutsideCommand(record, id: UUID().uuidString.lowercased(), requestID: requestID)
    }

    /// Records a write that is not a command: it happened in S3 already (or was refused), so the row is enqueued
    /// right after it, with the other such rows waiting at that moment (at most two statements' deadlines, 2 s).
    /// Its id derives from what was written, so a repeated record is one event.
    func recordOutsideCommand(_ record: AuditRecord, id: String, requestID: String) async {
        do {
            let message = try message(.audit(id: id, at: Date(), correlationID: requestID, causationID: nil, record))
            try await outsideCommands.enqueue(message)
        } catch {
            logger.warning("a refused write was not audited", metadata: ["event_type": "\(record.eventType)", "request_id": "\(requestID)", "error": "\(error)"])
        }
    }

    /// The audit record of a write route refusing a request for want of a valid token or of the role.
    /// - Parameter databaseOwner: for a request without a valid token, the tenant owning the database in its path:
    ///   the event is that tenant's (its `actor_tenant_id`), marked in `metadata.tenant_from`.
    static func accessDenied(_ refusal: RefusedRequest, databaseOwner: String? = nil) -> AuditRecord {
        let actor = refusal.identity.map { AuditActor(id: $0.subject, username: $0.subject, roles: $0.roles.sorted(), tenantID: $0.tenant) }
            ?? AuditActor(id: "anonymous", username: "anonymous", tenantID: databaseOwner)
        let code = refusal.status == 401 ? "unauthorized" : "forbidden"
        var metadata: [String: JSONValue] = ["method": .string(refusal.method.rawValue), "status": .int(refusal.status)]
        if refusal.identity == nil, databaseOwner != nil { metadata["tenant_from"] = "database_owner" }
        return AuditRecord(
            eventType: refusal.status == 401 ? "auth.unauthorized" : "auth.forbidden", action: refusal.method.rawValue.lowercased(), actor: actor,
            target: AuditTarget(resourceType: "route", resourceID: refusal.path, resourceName: refusal.route), success: false, errorCode: code,
            errorMessage: "\(refusal.error)", requestID: refusal.requestID, metadata: .object(metadata),
            tags: [source, "security"])
    }

    /// The database a request addressed: the path segment where its route has `{db}` (nil for routes without one).
    public static func database(inRoute route: String, path: String) -> String? {
        let template = route.split(separator: "/", omittingEmptySubsequences: false)
        let segments = path.split(separator: "?", maxSplits: 1).first.map { $0.split(separator: "/", omittingEmptySubsequences: false) } ?? []
        guard template.count == segments.count, let position = template.firstIndex(of: "{db}") else { return nil }
        let name = String(segments[position]).removingPercentEncoding ?? String(segments[position])
        return name.isEmpty ? nil : name
    }

    /// The audit record of a branch created (a create-only S3 object, not a command).
    static func branchCreated(_ caller: ServiceIdentity, database: String, branch: String, fromBranch: String, head: Int64, requestID: String) -> AuditRecord {
        AuditRecord(
            eventType: "version.branch.created", action: "create",
            actor: AuditActor(id: caller.subject, username: caller.subject, roles: caller.roles.sorted(), tenantID: caller.tenant),
            target: AuditTarget(resourceType: "branch", resourceID: "\(database)/\(branch)", resourceName: branch, branch: branch), requestID: requestID,
            metadata: ["database": .string(database), "from_branch": .string(fromBranch), "head": .int(Int(head))], tags: [source, "database:\(database)"])
    }

    /// The audit event id of a branch's creation: a branch is created once, so its name identifies the event.
    public static func branchEventID(database: String, branch: String) -> String {
        UUIDv5.domainEventID(commandID: "branch:\(database)/\(branch)", eventType: "AUDIT", aggregateID: database)
    }

    /// The audit record of an update or delete refused for an optimistic-concurrency conflict.
    static func conflict(_ caller: ServiceIdentity, _ type: OMSCommandType, database: String, aggregateID: String, expected: Int64, actual: Int64, requestID: String) -> AuditRecord {
        let probe = OMSEvent(eventID: "", kind: .command, eventType: type.rawValue, database: database, aggregateID: aggregateID, aggregateSequence: expected, commandID: "", actor: caller.subject, tenant: caller.tenant, payload: [:])
        let (eventType, action, target) = describe(probe, type)
        return AuditRecord(
            eventType: eventType.replacingOccurrences(of: ".updated", with: ".update_conflict").replacingOccurrences(of: ".deleted", with: ".delete_conflict"),
            action: action, actor: AuditActor(id: caller.subject, username: caller.subject, roles: caller.roles.sorted(), tenantID: caller.tenant), target: target,
            success: false, errorCode: "optimistic_concurrency_conflict", errorMessage: "'\(aggregateID)' is at version \(actual), not \(expected)", requestID: requestID,
            metadata: ["expected_seq": .int(Int(expected)), "actual_seq": .int(Int(actual)), "database": .string(database)], tags: [source, "database:\(database)"])
    }

    private func message(_ envelope: EventEnvelope<AuditRecord>) throws -> OutboxMessage {
        // An audit event is worth many retries: the relay parks it only after about an hour of failures.
        try OutboxMessage(envelope, source: Self.source, subject: subjects.subject(of: envelope.payload.eventType), maxRetries: 30)
    }

    /// Event type, action and target of a command.
    static func describe(_ command: OMSEvent, _ type: OMSCommandType) -> (String, String, AuditTarget) {
        let parts = command.aggregateID.split(separator: ":", maxSplits: 2).map(String.init)
        switch type {
        case .createDatabase: return ("schema.database.created", "create", AuditTarget(resourceType: "database", resourceID: command.database, resourceName: command.database))
        case .deleteDatabase: return ("schema.database.deleted", "delete", AuditTarget(resourceType: "database", resourceID: command.database, resourceName: command.database))
        case .createOntology:
            let classID = command.payload["id"]?.stringValue ?? parts.last ?? ""
            return ("schema.ontology.created", "create", AuditTarget(resourceType: "class", resourceID: "\(command.database)/\(classID)", resourceName: command.payload["label"]?.stringValue ?? classID))
        case .createInstance, .updateInstance, .deleteInstance:
            let classID = parts.count == 3 ? parts[1] : command.payload["class"]?.stringValue ?? ""
            let instance = parts.count == 3 ? parts[2] : command.payload["instance_id"]?.stringValue ?? ""
            let (eventType, action) = type == .createInstance ? ("instance.created", "create") : type == .updateInstance ? ("instance.updated", "update") : ("instance.deleted", "delete")
            return (eventType, action, AuditTarget(resourceType: "instance", resourceID: "\(command.database)/\(classID)/\(instance)", resourceName: classID, branch: "main"))
        }
    }
}
