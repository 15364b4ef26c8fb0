public import Foundation
public import PostgresNIO
public import ProdReadyCore
import ProdReadyPostgres

/// A filtered page request of `GET /api/v1/audit/events`, always within one tenant.
public struct AuditEventFilter: Sendable, Equatable {
    public var tenant: String
    public var actorID: String?
    public var action: String?
    public var eventType: String?
    public var targetResourceType: String?
    public var targetResourceID: String?
    public var success: Bool?
    public var from: Date?
    public var to: Date?
    /// Case-insensitive text search over names, error messages and changes.
    public var text: String?
    public var tag: String?
    public var limit: Int = 100
    /// Where the previous page ended.
    public var after: AuditCursor?

    public init(tenant: String) { self.tenant = tenant }
}

/// A position in the newest-first order `(event_time, id)`: both immutable, so a listing never returns a row twice
/// and never skips one that existed when it began, however many events arrive meanwhile. Opaque to clients.
public struct AuditCursor: Sendable, Equatable {
    /// Microseconds since 1970 (Postgres keeps timestamps to the microsecond).
    public var eventTimeMicros: Int64
    public var id: String

    public init(eventTimeMicros: Int64, id: String) {
        self.eventTimeMicros = eventTimeMicros
        self.id = id
    }

    public var token: String {
        Data("\(eventTimeMicros).\(id)".utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// Nil when `token` is not one this service issued.
    public init?(token: String) {
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard token.count <= 200, let data = Data(base64Encoded: base64), let text = String(data: data, encoding: .utf8) else { return nil }
        let parts = text.split(separator: ".", maxSplits: 1)
        guard parts.count == 2, let micros = Int64(parts[0]), UUID(uuidString: String(parts[1])) != nil else { return nil }
        self.init(eventTimeMicros: micros, id: String(parts[1]).lowercased())
    }
}

/// One page of events and the cursor of the next (nil at the end). The events are the JSON Postgres wrote, passed
/// through as they are: parsing and re-encoding them cost about 0.2 ms per row, ten times the query.
public struct AuditPage: Sendable {
    /// Each event's JSON object.
    public var eventsJSON: [String]
    public var next: AuditCursor?

    /// `{"status":"success","data":{"count":…,"events":[…],"next_cursor":…}}`.
    public var responseBody: String {
        let cursor = next.map { "\"\($0.token)\"" } ?? "null"
        return #"{"status":"success","data":{"count":"# + String(eventsJSON.count) + #","events":["# + eventsJSON.joined(separator: ",") + #"],"next_cursor":"# + cursor + "}}"
    }
}

extension AuditStore {
    /// `ILIKE` pattern matching `text` anywhere, its wildcards taken literally.
    static func containsPattern(_ text: String) -> String {
        "%" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%").replacingOccurrences(of: "_", with: "\\_") + "%"
    }

    public func page(_ filter: AuditEventFilter) async throws -> AuditPage {
        let pattern = filter.text.map(Self.containsPattern)
        let afterMicros = filter.after?.eventTimeMicros
        let afterID = filter.after?.id
        // Absent filters are bound as NULL; postgres-nio plans each query with its values, so they cost nothing.
        let query: PostgresQuery = """
            SELECT (to_jsonb(e) - 'id')::text, (extract(epoch FROM e.event_time) * 1000000)::bigint, e.id::text
            FROM \(unescaped: s).audit_events e
            WHERE e.actor_tenant_id = \(filter.tenant)
              AND (\(filter.actorID)::text IS NULL OR e.actor_id = \(filter.actorID))
              AND (\(filter.action)::text IS NULL OR e.action = \(filter.action))
              AND (\(filter.eventType)::text IS NULL OR e.event_type = \(filter.eventType))
              AND (\(filter.targetResourceType)::text IS NULL OR e.target_resource_type = \(filter.targetResourceType))
              AND (\(filter.targetResourceID)::text IS NULL OR e.target_resource_id = \(filter.targetResourceID))
              AND (\(filter.success)::boolean IS NULL OR e.success = \(filter.success))
              AND (\(filter.from)::timestamptz IS NULL OR e.event_time >= \(filter.from))
              AND (\(filter.to)::timestamptz IS NULL OR e.event_time < \(filter.to))
              AND (\(filter.tag)::text IS NULL OR e.tags @> jsonb_build_array(\(filter.tag)::text))
              AND (\(pattern)::text IS NULL OR e.target_resource_name ILIKE \(pattern) OR e.actor_username ILIKE \(pattern)
                   OR e.error_message ILIKE \(pattern) OR e.changes::text ILIKE \(pattern))
              AND (\(afterMicros)::bigint IS NULL OR (e.event_time, e.id) < ('epoch'::timestamptz + \(afterMicros) * interval '1 microsecond', \(afterID)::uuid))
            ORDER BY e.event_time DESC, e.id DESC
            LIMIT \(filter.limit + 1)
            """
        let found = try await rows(query, "listing audit events")
        var events: [String] = []
        var last: AuditCursor?
        for row in found.prefix(filter.limit) {
            let (json, micros, id) = try row.decode((String, Int64, String).self)
            events.append(json)
            last = AuditCursor(eventTimeMicros: micros, id: id)
        }
        return AuditPage(eventsJSON: events, next: found.count > filter.limit ? last : nil)
    }

    /// One event of `tenant` by its event id.
    public func event(_ eventID: String, tenant: String) async throws -> JSONValue? {
        let query: PostgresQuery = "SELECT row_to_json(e)::text FROM \(unescaped: s).audit_events e WHERE e.event_id = \(eventID) AND e.actor_tenant_id = \(tenant)"
        guard let row = try await rows(query, "reading audit event \(eventID)").first else { return nil }
        return Self.presented(try JSONValue.parse(Array(try row.decode(String.self).utf8)))
    }

    /// Counts per event type, action, success and hour (UTC) of `tenant`'s events in [from, to).
    public func stats(tenant: String, from: Date?, to: Date?) async throws -> JSONValue {
        let query: PostgresQuery = """
            SELECT dimension, key, count FROM (
                SELECT 'event_type' AS dimension, event_type AS key, count(*)::bigint AS count FROM \(unescaped: s).audit_events
                    WHERE actor_tenant_id = \(tenant) AND (\(from)::timestamptz IS NULL OR event_time >= \(from)) AND (\(to)::timestamptz IS NULL OR event_time < \(to)) GROUP BY event_type
                UNION ALL
                SELECT 'action', action, count(*)::bigint FROM \(unescaped: s).audit_events
                    WHERE actor_tenant_id = \(tenant) AND (\(from)::timestamptz IS NULL OR event_time >= \(from)) AND (\(to)::timestamptz IS NULL OR event_time < \(to)) GROUP BY action
                UNION ALL
                SELECT 'success', success::text, count(*)::bigint FROM \(unescaped: s).audit_events
                    WHERE actor_tenant_id = \(tenant) AND (\(from)::timestamptz IS NULL OR event_time >= \(from)) AND (\(to)::timestamptz IS NULL OR event_time < \(to)) GROUP BY success
                UNION ALL
                SELECT 'hour', to_char(date_trunc('hour', event_time AT TIME ZONE 'UTC'), 'YYYY-MM-DD"T"HH24:00:00"Z"'), count(*)::bigint FROM \(unescaped: s).audit_events
                    WHERE actor_tenant_id = \(tenant) AND (\(from)::timestamptz IS NULL OR event_time >= \(from)) AND (\(to)::timestamptz IS NULL OR event_time < \(to))
                    GROUP BY date_trunc('hour', event_time AT TIME ZONE 'UTC')
            ) counts
            """
        var byDimension: [String: [String: JSONValue]] = ["event_type": [:], "action": [:], "success": [:], "hour": [:]]
        var total = 0
        for row in try await rows(query, "counting audit events") {
            let (dimension, key, count) = try row.decode((String, String, Int64).self)
            byDimension[dimension, default: [:]][key] = .int(Int(count))
            if dimension == "success" { total += Int(count) }
        }
        return [
            "total": .int(total), "by_event_type": .object(byDimension["event_type"] ?? [:]), "by_action": .object(byDimension["action"] ?? [:]),
            "by_success": .object(byDimension["success"] ?? [:]), "by_hour": .object(byDimension["hour"] ?? [:]),
        ]
    }

    /// Stored rows and dead letters, for metrics and tests of the service itself.
    public func counts() async throws -> (events: Int, deadLetters: Int) {
        let query: PostgresQuery = "SELECT (SELECT count(*) FROM \(unescaped: s).audit_events)::bigint, (SELECT count(*) FROM \(unescaped: s).audit_dead_letters)::bigint"
        guard let row = try await rows(query, "counting audit rows").first else { return (0, 0) }
        let (events, letters) = try row.decode((Int64, Int64).self)
        return (Int(events), Int(letters))
    }

    /// A row as the API shows it: the columns, minus the internal id.
    static func presented(_ row: JSONValue) -> JSONValue {
        guard var object = row.objectValue else { return row }
        object["id"] = nil
        return .object(object)
    }
}
