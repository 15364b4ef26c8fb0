public import Foundation
public import Hummingbird
public import Logging
public import PostgresNIO
public import ProdReadyCore
import ProdReadyPostgres
public import ProdReadyService
public import ServiceLifecycle

/// One retention policy: events whose type matches `pattern` (a POSIX regular expression over the whole type) are
/// kept `days` days. The most specific (longest) matching pattern wins.
public struct RetentionPolicy: Codable, Sendable, Equatable {
    public var eventTypePattern: String
    public var retentionDays: Int
    public var description: String?

    public init(eventTypePattern: String, retentionDays: Int, description: String? = nil) {
        self.eventTypePattern = eventTypePattern
        self.retentionDays = retentionDays
        self.description = description
    }

    enum CodingKeys: String, CodingKey { case eventTypePattern = "event_type_pattern", retentionDays = "retention_days", description }
}

extension AuditStore {
    public func retentionPolicies() async throws -> [RetentionPolicy] {
        let query: PostgresQuery = "SELECT event_type_pattern, retention_days, description FROM \(unescaped: s).audit_retention_policies ORDER BY length(event_type_pattern) DESC, event_type_pattern"
        return try await rows(query, "reading retention policies").map {
            let (pattern, days, description) = try $0.decode((String, Int32, String).self)
            return RetentionPolicy(eventTypePattern: pattern, retentionDays: Int(days), description: description)
        }
    }

    /// Adds or changes policies; a pattern Postgres cannot compile is refused (`invalid_argument`) and nothing changes.
    public func upsert(_ policies: [RetentionPolicy]) async throws {
        let logger = self.logger
        let s = self.s
        try await withPostgresTransaction(client, logger: logger, doing: "changing retention policies") { connection in
            for policy in policies {
                do {
                    // Compiles the pattern (an invalid one raises 2201B) before anything is written.
                    _ = try await connection.query("SELECT '' ~ \(policy.eventTypePattern)", logger: logger).collect()
                } catch {
                    throw ProdReadyError(.invalidArgument, "'\(policy.eventTypePattern)' is not a valid regular expression")
                }
                let query: PostgresQuery = """
                    INSERT INTO \(unescaped: s).audit_retention_policies (event_type_pattern, retention_days, description)
                    VALUES (\(policy.eventTypePattern), \(policy.retentionDays), \(policy.description ?? ""))
                    ON CONFLICT (event_type_pattern) DO UPDATE SET retention_days = excluded.retention_days, description = excluded.description, updated_at = now()
                    """
                _ = try await connection.query(query, logger: logger).collect()
            }
        }
    }

    /// Deletes every event older than its policy allows; how many, per event type.
    public func applyRetention(now: Date = Date()) async throws -> [String: Int] {
        let query: PostgresQuery = """
            WITH kept AS (
                SELECT e.id, (SELECT p.retention_days FROM \(unescaped: s).audit_retention_policies p
                              WHERE e.event_type ~ ('^(?:' || p.event_type_pattern || ')$')
                              ORDER BY length(p.event_type_pattern) DESC, p.event_type_pattern LIMIT 1) AS days
                FROM \(unescaped: s).audit_events e
                WHERE e.event_time < \(now) - (SELECT min(retention_days) FROM \(unescaped: s).audit_retention_policies) * interval '1 day'
            ), removed AS (
                DELETE FROM \(unescaped: s).audit_events e USING kept
                WHERE e.id = kept.id AND kept.days IS NOT NULL AND e.event_time < \(now) - kept.days * interval '1 day'
                RETURNING e.event_type
            )
            SELECT event_type, count(*)::bigint FROM removed GROUP BY event_type
            """
        var removed: [String: Int] = [:]
        for row in try await queryRows(client, query, deadline: .seconds(120), doing: "applying retention", logger: logger) {
            let (type, count) = try row.decode((String, Int64).self)
            removed[type] = Int(count)
        }
        return removed
    }

    // MARK: Reports

    /// Records a report request; `generateReport` fills it in.
    public func requestReport(tenant: String, type: String, parameters: JSONValue, requestedBy: String) async throws -> String {
        let query: PostgresQuery = """
            INSERT INTO \(unescaped: s).audit_reports (tenant_id, report_type, parameters, requested_by) VALUES (\(tenant), \(type), \(parameters.text)::jsonb, \(requestedBy))
            RETURNING id::text
            """
        guard let id = try await rows(query, "requesting a report").first?.decode(String.self) else { throw ProdReadyError(.serverError, "no report id returned") }
        return id
    }

    /// Computes a report: per actor and per action counts, failures, first and last event, within its tenant,
    /// time range and filters.
    public func generateReport(id: String) async throws {
        let s = self.s
        _ = try await rows("UPDATE \(unescaped: s).audit_reports SET status = 'running' WHERE id = \(id)::uuid AND status = 'pending'", "starting report \(id)")
        let query: PostgresQuery = """
            WITH r AS (SELECT tenant_id, report_type, parameters FROM \(unescaped: s).audit_reports WHERE id = \(id)::uuid),
            e AS (
                SELECT e.* FROM \(unescaped: s).audit_events e, r
                WHERE e.actor_tenant_id = r.tenant_id
                  AND (r.parameters->>'from' IS NULL OR e.event_time >= (r.parameters->>'from')::timestamptz)
                  AND (r.parameters->>'to' IS NULL OR e.event_time < (r.parameters->>'to')::timestamptz)
                  AND (r.parameters->'filters'->>'event_type' IS NULL OR e.event_type = r.parameters->'filters'->>'event_type')
                  AND (r.parameters->'filters'->>'actor_id' IS NULL OR e.actor_id = r.parameters->'filters'->>'actor_id')
                  AND (r.parameters->'filters'->>'action' IS NULL OR e.action = r.parameters->'filters'->>'action')
                  AND (r.parameters->'filters'->>'target_resource_type' IS NULL OR e.target_resource_type = r.parameters->'filters'->>'target_resource_type')
            )
            SELECT jsonb_build_object(
                'total', (SELECT count(*) FROM e),
                'failures', (SELECT count(*) FROM e WHERE NOT success),
                'by_actor', coalesce((SELECT jsonb_object_agg(actor_id, n) FROM (SELECT actor_id, count(*) AS n FROM e GROUP BY actor_id) a), '{}'::jsonb),
                'by_action', coalesce((SELECT jsonb_object_agg(action, n) FROM (SELECT action, count(*) AS n FROM e GROUP BY action) a), '{}'::jsonb),
                'failures_by_error_code', coalesce((SELECT jsonb_object_agg(coalesce(error_code, 'none'), n) FROM (SELECT error_code, count(*) AS n FROM e WHERE NOT success GROUP BY error_code) a), '{}'::jsonb),
                'first_event', (SELECT jsonb_build_object('event_id', event_id, 'event_time', event_time) FROM e ORDER BY event_time, id LIMIT 1),
                'last_event', (SELECT jsonb_build_object('event_id', event_id, 'event_time', event_time) FROM e ORDER BY event_time DESC, id DESC LIMIT 1)
            )::text
            """
        do {
            let result = try await queryRows(client, query, deadline: .seconds(120), doing: "generating report \(id)", logger: logger).first?.decode(String.self) ?? "{}"
            _ = try await rows("UPDATE \(unescaped: s).audit_reports SET status = 'completed', result = \(result)::jsonb, completed_at = now() WHERE id = \(id)::uuid", "finishing report \(id)")
        } catch {
            _ = try? await rows("UPDATE \(unescaped: s).audit_reports SET status = 'failed', error_message = \("\(error)"), completed_at = now() WHERE id = \(id)::uuid", "failing report \(id)")
            throw error
        }
    }

    public func report(id: String, tenant: String) async throws -> JSONValue? {
        guard UUID(uuidString: id) != nil else { return nil }
        let query: PostgresQuery = """
            SELECT jsonb_build_object('id', id, 'type', report_type, 'parameters', parameters, 'status', status, 'result', result, 'error', error_message,
                                      'requested_by', requested_by, 'created_at', created_at, 'completed_at', completed_at)::text
            FROM \(unescaped: s).audit_reports WHERE id = \(id)::uuid AND tenant_id = \(tenant)
            """
        guard let row = try await rows(query, "reading report \(id)").first else { return nil }
        return try JSONValue.parse(Array(try row.decode(String.self).utf8))
    }

    /// Reports requested and not finished (after a restart, they are generated again).
    public func unfinishedReports() async throws -> [String] {
        try await rows("SELECT id::text FROM \(unescaped: s).audit_reports WHERE status IN ('pending', 'running') ORDER BY created_at", "listing unfinished reports").map { try $0.decode(String.self) }
    }
}

/// The routes of reports and retention.
enum AuditAdministration {
    struct ReportRequest: Decodable {
        var type: String
        var from: String?
        var to: String?
        var filters: [String: String]?
    }

    struct PoliciesRequest: Decodable {
        var policies: [RetentionPolicy]
    }

    /// The policies as both policy routes answer them.
    static func policiesResponse(_ policies: [RetentionPolicy]) -> Response {
        Response.json(["status": "success", "data": ["policies": .array(policies.map {
            ["event_type_pattern": .string($0.eventTypePattern), "retention_days": .int($0.retentionDays), "description": .string($0.description ?? "")]
        })]])
    }

    static func addRoutes(to router: ServiceRouter, store: AuditStore, logger: Logger) {
        router.add(.post, "/api/v1/audit/reports", summary: "Request a compliance or activity report", role: AuditAPI.auditor,
                   body: ["type": "object", "required": ["type"], "properties": ["type": ["enum": ["compliance", "activity"]], "from": ["type": "string", "format": "date-time"], "to": ["type": "string", "format": "date-time"], "filters": ["type": "object"]]],
                   responses: [202: "the report's id", 400: "an unknown type or a malformed time"]) { request, context in
            let caller = try context.caller()
            let body = try await request.decodeJSON(ReportRequest.self, context: context)
            guard ["compliance", "activity"].contains(body.type) else {
                throw ServiceError.badRequest("invalid_field", "the field 'type' must be compliance or activity, got '\(body.type.prefix(50))'", extra: ["field": "type"])
            }
            var parameters: [String: JSONValue] = [:]
            for (name, value) in [("from", body.from), ("to", body.to)] {
                guard let value else { continue }
                guard let date = InternetTime.parse(value) else { throw ServiceError.badRequest("invalid_field", "the field '\(name)' must be an RFC 3339 time", extra: ["field": .string(name)]) }
                parameters[name] = .string(InternetTime.format(date))
            }
            let allowed: Set<String> = ["event_type", "actor_id", "action", "target_resource_type"]
            if let filters = body.filters {
                if let unknown = filters.keys.first(where: { !allowed.contains($0) }) {
                    throw ServiceError.badRequest("invalid_field", "unknown filter '\(unknown.prefix(50))'; one of \(allowed.sorted().joined(separator: ", "))", extra: ["field": "filters"])
                }
                parameters["filters"] = .object(filters.mapValues(JSONValue.string))
            }
            let id = try await AuditAPI.dependency { try await store.requestReport(tenant: caller.tenant, type: body.type, parameters: .object(parameters), requestedBy: caller.subject) }
            Task {
                do { try await store.generateReport(id: id) } catch { logger.error("report failed", metadata: ["report_id": "\(id)", "error": "\(error)"]) }
            }
            return Response.json(["status": "accepted", "data": ["id": .string(id), "status": "pending"]], status: .accepted)
        }
        router.add(.get, "/api/v1/audit/reports/{id}", summary: "A report's status and result", role: AuditAPI.auditor, responses: [200: "the report", 404: "no such report for this tenant"]) { _, context in
            let caller = try context.caller()
            let id = context.parameter("id")
            guard let report = try await AuditAPI.dependency({ try await store.report(id: id, tenant: caller.tenant) }) else { throw ServiceError.notFound("no report '\(id.prefix(60))'") }
            return Response.json(["status": "success", "data": report])
        }
        router.add(.get, "/api/v1/audit/retention-policies", summary: "Retention per event type pattern; the longest matching pattern wins", role: AuditAPI.auditor, responses: [200: "the policies"]) { _, _ in
            let policies = try await AuditAPI.dependency { try await store.retentionPolicies() }
            return policiesResponse(policies)
        }
        router.add(.put, "/api/v1/audit/retention-policies", summary: "Add or change retention policies", role: AuditAPI.auditAdmin,
                   body: ["type": "object", "required": ["policies"], "properties": ["policies": ["type": "array", "items": ["type": "object", "required": ["event_type_pattern", "retention_days"]]]]],
                   responses: [200: "the policies now", 400: "an invalid pattern or number of days"]) { request, context in
            let body = try await request.decodeJSON(PoliciesRequest.self, context: context)
            guard !body.policies.isEmpty, body.policies.count <= 100 else { throw ServiceError.badRequest("invalid_field", "give 1 to 100 policies", extra: ["field": "policies"]) }
            for (index, policy) in body.policies.enumerated() {
                guard (1...36_500).contains(policy.retentionDays) else {
                    throw ServiceError.badRequest("invalid_field", "retention_days must be 1 to 36,500, got \(policy.retentionDays)", extra: ["field": .string("policies[\(index)].retention_days")])
                }
                guard !policy.eventTypePattern.isEmpty, policy.eventTypePattern.utf8.count <= 200 else {
                    throw ServiceError.badRequest("invalid_field", "event_type_pattern must be 1 to 200 bytes", extra: ["field": .string("policies[\(index)].event_type_pattern")])
                }
            }
            try await AuditAPI.dependency { try await store.upsert(body.policies) }
            let policies = try await AuditAPI.dependency { try await store.retentionPolicies() }
            return policiesResponse(policies)
        }
        router.add(.post, "/api/v1/audit/retention/run", summary: "Run the retention job now", role: AuditAPI.auditAdmin, responses: [200: "how many events were deleted, per event type"]) { _, _ in
            let removed = try await AuditAPI.dependency { try await store.applyRetention() }
            return Response.json(["status": "success", "data": ["deleted": .int(removed.values.reduce(0, +)), "by_event_type": .object(removed.mapValues(JSONValue.int))]])
        }
    }
}

/// Runs the retention job every `interval`, and finishes reports a previous run left unfinished.
public struct AuditHousekeeping: Service {
    let store: AuditStore
    let interval: Duration
    let readiness: Readiness
    let logger: Logger

    public init(store: AuditStore, interval: Duration, readiness: Readiness, logger: Logger) {
        self.store = store
        self.interval = interval
        self.readiness = readiness
        self.logger = logger
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            while readiness.waitingFor.contains("migrations") { try await Task.sleep(for: .milliseconds(50)) }
            var first = true
            while !Task.isCancelled {
                if first, let unfinished = try? await store.unfinishedReports() {
                    for id in unfinished { try? await store.generateReport(id: id) }
                }
                first = false
                do {
                    let removed = try await store.applyRetention()
                    if !removed.isEmpty { logger.info("retention deleted expired audit events", metadata: ["deleted": "\(removed.values.reduce(0, +))"]) }
                } catch {
                    logger.warning("retention run failed; trying again next interval", metadata: ["error": "\(error)"])
                }
                try await Task.sleep(for: interval)
            }
        }
    }
}
