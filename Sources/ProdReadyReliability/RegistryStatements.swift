import PostgresNIO

// Named prepared statements for the registry's per-event calls: parsed and planned once per connection instead
// of on every call (about a quarter of the server's CPU per event with two calls per event). Their SQL names the
// functions unqualified, so they run only on pools whose connections resolve names in the registry's schema
// (`PinnedPostgresClient.searchPath`); the names carry the migration that last changed a signature.

struct ClaimStatement: PostgresPreparedStatement {
    static let name = "prodready_claim_m2"
    static let sql = "SELECT claim_outcome, claim_attempts FROM prodready_claim($1, $2, $3, $4, $5, $6)"
    static let bindingDataTypes: [PostgresDataType] = [.text, .text, .text, .int8, .text, .int8]
    typealias Row = (String, Int?)

    var handler: String
    var eventID: String
    var aggregateID: String?
    var sequence: Int64?
    var owner: String
    var leaseMilliseconds: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 6)
        bindings.append(handler)
        bindings.append(eventID)
        bindings.appendOptional(aggregateID)
        bindings.appendOptional(sequence)
        bindings.append(owner)
        bindings.append(leaseMilliseconds)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// `ClaimStatement` committing with `synchronous_commit = off` (`ProcessedEventRegistry.ClaimCommit.asynchronous`).
struct AsynchronousClaimStatement: PostgresPreparedStatement {
    static let commitClause = ", set_config('synchronous_commit', 'off', true)"
    static let name = "prodready_claim_async_m2"
    static let sql = ClaimStatement.sql + commitClause
    static let bindingDataTypes = ClaimStatement.bindingDataTypes
    typealias Row = ClaimStatement.Row

    var claim: ClaimStatement

    func makeBindings() throws -> PostgresBindings { try claim.makeBindings() }
    func decodeRow(_ row: PostgresRow) throws -> Row { try claim.decodeRow(row) }
}

struct MarkDoneStatement: PostgresPreparedStatement {
    static let name = "prodready_mark_done_m2"
    static let sql = "SELECT done_result, current_status, current_owner FROM prodready_mark_done($1, $2, $3)"
    static let bindingDataTypes: [PostgresDataType] = [.text, .text, .text]
    typealias Row = (String, String?, String?)

    var handler: String
    var eventID: String
    var owner: String

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 3)
        bindings.append(handler)
        bindings.append(eventID)
        bindings.append(owner)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

struct MarkDoneThenClaimStatement: PostgresPreparedStatement {
    static let name = "prodready_mark_done_then_claim_m4"
    static let sql = """
        SELECT done_result, current_status, current_owner, claim_outcome, claim_attempts
        FROM prodready_mark_done_then_claim($1, $2, $3, $4, $5, $6, $7)
        """
    static let bindingDataTypes: [PostgresDataType] = [.text, .text, .text, .text, .text, .int8, .int8]
    typealias Row = (String, String?, String?, String?, Int?)

    var handler: String
    var eventID: String
    var owner: String
    var next: EventDelivery
    var leaseMilliseconds: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 7)
        bindings.append(handler)
        bindings.append(eventID)
        bindings.append(owner)
        bindings.append(next.eventID)
        bindings.appendOptional(next.aggregateID)
        bindings.appendOptional(next.sequence)
        bindings.append(leaseMilliseconds)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

extension PostgresBindings {
    mutating func appendOptional<Value: PostgresNonThrowingEncodable>(_ value: Value?) {
        if let value { append(value) } else { appendNull() }
    }
}
