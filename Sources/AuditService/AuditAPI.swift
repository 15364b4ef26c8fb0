public import Foundation
import HTTPTypes
public import Hummingbird
public import Logging
import PostgresNIO
import ProdReadyCore
import ProdReadyPostgres
public import ProdReadyService

/// The audit API (SPEC-audit "Audit API"): `auditor` reads its tenant's events, stats and reports; `audit-admin`
/// changes retention policies and runs the retention job.
public enum AuditAPI {
    public static let auditor = ServiceRole("auditor")
    public static let auditAdmin = ServiceRole("audit-admin")
    static let maximumLimit = 1000

    static let eventFilters: [QueryParameter] = [
        QueryParameter("actor_id", ["type": "string"], summary: "events of this actor"),
        QueryParameter("action", ["type": "string"], summary: "create, update, delete, …"),
        QueryParameter("event_type", ["type": "string"], summary: "e.g. instance.created"),
        QueryParameter("target_resource_type", ["type": "string"]),
        QueryParameter("target_resource_id", ["type": "string"]),
        QueryParameter("success", ["type": "boolean"]),
        QueryParameter("from", ["type": "string", "format": "date-time"], summary: "RFC 3339, inclusive"),
        QueryParameter("to", ["type": "string", "format": "date-time"], summary: "RFC 3339, exclusive"),
        QueryParameter("q", ["type": "string", "maxLength": 200], summary: "text in resource names, actor names, error messages and changes"),
        QueryParameter("tag", ["type": "string"]),
        QueryParameter("limit", ["type": "integer", "minimum": 1, "maximum": 1000], summary: "page size (default 100)"),
        QueryParameter("cursor", ["type": "string"], summary: "the next_cursor of the previous page"),
    ]

    public static func addRoutes(to router: ServiceRouter, store: AuditStore, logger: Logger) {
        router.add(.get, "/api/v1/audit/events", summary: "The tenant's audit events, newest first, filtered, in pages with a stable cursor", role: auditor,
                   query: eventFilters, responses: [200: "a page of events", 400: "a malformed filter or cursor"]) { request, context in
            let caller = try context.caller()
            let filter = try eventFilter(request, tenant: caller.tenant)
            let page = try await dependency { try await store.page(filter) }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: page.responseBody)))
        }
        router.add(.get, "/api/v1/audit/events/{event_id}", summary: "One audit event by its event id", role: auditor, responses: [200: "the event", 404: "no such event for this tenant"]) { _, context in
            let caller = try context.caller()
            let id = context.parameter("event_id")
            guard id.utf8.count <= 200, let event = try await dependency({ try await store.event(id, tenant: caller.tenant) }) else {
                throw ServiceError.notFound("no audit event '\(id)'")
            }
            return Response.json(["status": "success", "data": event])
        }
        router.add(.get, "/api/v1/audit/stats", summary: "Counts per event type, action, success and hour", role: auditor,
                   query: [eventFilters[6], eventFilters[7]], responses: [200: "the counts"]) { request, context in
            let caller = try context.caller()
            let (from, to) = try timeRange(request)
            return Response.json(["status": "success", "data": try await dependency { try await store.stats(tenant: caller.tenant, from: from, to: to) }])
        }
        AuditAdministration.addRoutes(to: router, store: store, logger: logger)
    }

    static func eventFilter(_ request: Request, tenant: String) throws -> AuditEventFilter {
        let query = request.uri.queryParameters
        var filter = AuditEventFilter(tenant: tenant)
        func text(_ name: String, maximum: Int = 500) throws -> String? {
            guard let value = query[name[...]].map(String.init) else { return nil }
            guard !value.isEmpty, value.utf8.count <= maximum else {
                throw ServiceError.badRequest("invalid_parameter", "the query parameter '\(name)' must be 1 to \(maximum) bytes", extra: ["field": .string(name)])
            }
            return value
        }
        filter.actorID = try text("actor_id")
        filter.action = try text("action")
        filter.eventType = try text("event_type")
        filter.targetResourceType = try text("target_resource_type")
        filter.targetResourceID = try text("target_resource_id")
        filter.text = try text("q", maximum: 200)
        filter.tag = try text("tag")
        if let success = query["success"].map(String.init) {
            guard let value = Bool(success) else { throw ServiceError.badRequest("invalid_parameter", "the query parameter 'success' must be true or false, got '\(success)'", extra: ["field": "success"]) }
            filter.success = value
        }
        (filter.from, filter.to) = try timeRange(request)
        filter.limit = try request.integerQuery("limit", range: 1...maximumLimit) ?? 100
        if let cursor = try text("cursor") {
            guard let position = AuditCursor(token: cursor) else { throw ServiceError.badRequest("invalid_cursor", "the cursor is not one this service issued", extra: ["field": "cursor"]) }
            filter.after = position
        }
        return filter
    }

    static func timeRange(_ request: Request) throws -> (Date?, Date?) {
        func time(_ name: String) throws -> Date? {
            guard let raw = request.uri.queryParameters[name[...]].map(String.init) else { return nil }
            guard let date = InternetTime.parse(raw) else {
                throw ServiceError.badRequest("invalid_parameter", "the query parameter '\(name)' must be an RFC 3339 time such as 2026-12-03T10:00:00Z, got '\(raw.prefix(100))'", extra: ["field": .string(name)])
            }
            return date
        }
        let (from, to) = (try time("from"), try time("to"))
        if let from, let to, from > to { throw ServiceError.badRequest("invalid_parameter", "'from' is after 'to'", extra: ["field": "from"]) }
        return (from, to)
    }

    /// Postgres unavailable → 503 with Retry-After; a refused value → 400; everything else as it is.
    static func dependency<Result: Sendable>(_ body: () async throws -> Result) async throws -> Result {
        do {
            return try await body()
        } catch let error as ServiceError {
            throw error
        } catch let error as ProdReadyError where error.code == .invalidArgument {
            throw ServiceError.badRequest("invalid_argument", error.message)
        } catch {
            throw ServiceError.unavailable("postgres_unavailable", "the audit store cannot be reached now", underlying: error)
        }
    }
}
