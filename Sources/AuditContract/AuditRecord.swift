public import Foundation
public import ProdReadyCore
public import ProdReadyNATS
public import ProdReadyReliability

/// One audit event as it travels from a producer's outbox through the `AUDIT` stream to the audit service: the
/// wire contract both sides compile against (SPEC-audit). The envelope carries the event id (also the
/// `Nats-Msg-Id`), the event time (`occurred_at`) and the correlation and causation ids; this payload carries the
/// rest of an `audit_events` row.
public struct AuditRecord: EventPayload, Equatable {
    public static let eventType = "audit_event"
    public static let schemaVersion = 1

    /// What happened, dotted: `schema.database.created`, `instance.updated`, `auth.access_denied`, …
    public var eventType: String
    /// The verb: `create`, `update`, `delete`, `write` (a refused write), …
    public var action: String
    public var actor: AuditActor
    public var target: AuditTarget
    public var success: Bool
    public var errorCode: String?
    public var errorMessage: String?
    public var durationMS: Int?
    public var requestID: String?
    /// What changed: `{"before": …, "after": …}` where the producer knows both.
    public var changes: JSONValue?
    public var metadata: JSONValue?
    public var tags: [String]?

    public init(
        eventType: String, action: String, actor: AuditActor, target: AuditTarget, success: Bool = true, errorCode: String? = nil, errorMessage: String? = nil,
        durationMS: Int? = nil, requestID: String? = nil, changes: JSONValue? = nil, metadata: JSONValue? = nil, tags: [String]? = nil
    ) {
        self.eventType = eventType
        self.action = action
        self.actor = actor
        self.target = target
        self.success = success
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.durationMS = durationMS
        self.requestID = requestID
        self.changes = changes
        self.metadata = metadata
        self.tags = tags
    }

    enum CodingKeys: String, CodingKey {
        case eventType = "event_type", action, actor, target, success, errorCode = "error_code", errorMessage = "error_message"
        case durationMS = "duration_ms", requestID = "request_id", changes, metadata, tags
    }

    /// The reasons this record cannot be stored (empty when it can): what the audit service dead-letters.
    public var problems: [String] {
        var problems: [String] = []
        if !AuditSubjects.isValidEventType(eventType) { problems.append("event_type '\(eventType)' is not dotted lower-case words") }
        if action.isEmpty { problems.append("action is empty") }
        if actor.id.isEmpty { problems.append("actor.id is empty") }
        if actor.username.isEmpty { problems.append("actor.username is empty") }
        if target.resourceType.isEmpty { problems.append("target.resource_type is empty") }
        if target.resourceID.isEmpty { problems.append("target.resource_id is empty") }
        for (name, value) in [("error_code", errorCode), ("error_message", errorMessage), ("request_id", requestID)] where (value?.utf8.count ?? 0) > 4096 {
            problems.append("\(name) is longer than 4,096 bytes")
        }
        return problems
    }
}

/// Who did it.
public struct AuditActor: Codable, Sendable, Equatable {
    public var id: String
    public var username: String
    public var email: String?
    public var roles: [String]
    /// The tenant the actor acted in; the audit API shows an event only to this tenant.
    public var tenantID: String?

    public init(id: String, username: String, email: String? = nil, roles: [String] = [], tenantID: String?) {
        self.id = id
        self.username = username
        self.email = email
        self.roles = roles
        self.tenantID = tenantID
    }

    enum CodingKeys: String, CodingKey { case id, username, email, roles, tenantID = "tenant_id" }
}

/// What it was done to.
public struct AuditTarget: Codable, Sendable, Equatable {
    public var resourceType: String
    public var resourceID: String
    public var resourceName: String?
    public var branch: String?

    public init(resourceType: String, resourceID: String, resourceName: String? = nil, branch: String? = nil) {
        self.resourceType = resourceType
        self.resourceID = resourceID
        self.resourceName = resourceName
        self.branch = branch
    }

    enum CodingKeys: String, CodingKey { case resourceType = "resource_type", resourceID = "resource_id", resourceName = "resource_name", branch }
}

/// Where audit events go on NATS: stream `AUDIT` over `audit.>` by default. A prefix keeps deployments sharing a
/// NATS server apart (`t1.audit.>` in stream `AUDIT_T1`), since two streams cannot share subjects.
public struct AuditSubjects: Sendable, Equatable {
    public var prefix: String

    public init(prefix: String = "") { self.prefix = prefix }

    /// The subject of one event: `<prefix>audit.<event type>`.
    public func subject(of eventType: String) -> String { "\(prefix)audit.\(eventType)" }
    /// Every audit subject of this deployment.
    public var wildcard: String { "\(prefix)audit.>" }

    /// `AUDIT`, or `AUDIT_<PREFIX>` with the prefix's dots and dashes as underscores.
    public var streamName: String {
        let suffix = prefix.split(separator: ".").joined(separator: "_").replacingOccurrences(of: "-", with: "_").uppercased()
        return suffix.isEmpty ? "AUDIT" : "AUDIT_\(suffix)"
    }

    /// The seed's stream settings: file storage, 30 days, 1 GiB, 1,000,000 messages, duplicates within 2 minutes.
    /// Applied by whoever starts first (the relay or the audit service).
    public var stream: JetStreamStreamConfiguration {
        var configuration = JetStreamStreamConfiguration(name: streamName, subjects: [wildcard])
        configuration.fileStorage = true
        configuration.maxAge = .seconds(30 * 24 * 3600)
        configuration.maxBytes = 1 << 30
        configuration.maxMessages = 1_000_000
        configuration.duplicateWindow = .seconds(120)
        return configuration
    }

    /// Dotted lower-case words (`a-z`, digits, `_`, `-`): a valid subject tail without wildcards.
    public static func isValidEventType(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 200 && text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { token in
            !token.isEmpty && token.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "_" || $0 == "-" } && token.allSatisfy(\.isASCII)
        }
    }

    /// A prefix is empty or dotted tokens ending in a dot (`t1.`).
    public static func isValidPrefix(_ text: String) -> Bool {
        text.isEmpty || (text.hasSuffix(".") && text.dropLast().split(separator: ".", omittingEmptySubsequences: false).allSatisfy { token in
            !token.isEmpty && token.allSatisfy { ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") && $0.isASCII }
        })
    }
}

/// Builds the envelope of an audit record with the stable event id the producer chose.
extension EventEnvelope where Payload == AuditRecord {
    public static func audit(id: String, at time: Date, correlationID: String?, causationID: String?, _ record: AuditRecord) -> EventEnvelope<AuditRecord> {
        EventEnvelope(id: id, occurredAt: time, correlationID: correlationID, causationID: causationID, payload: record)
    }
}
