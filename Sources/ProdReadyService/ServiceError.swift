public import Hummingbird

import Foundation

/// The one error a service's HTTP layer answers with: a status, a stable snake_case code, a message for people,
/// the extra fields a spec names (such as a conflict's `expected_seq`), and the cause, which is logged and never
/// sent. Every response body has the same shape: `{"status":"error","error":code,"message":…, extra…}`.
public struct ServiceError: Error, HTTPResponseError, CustomStringConvertible, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    public var extra: [String: JSONValue]
    /// Seconds a client should wait before trying again (sent as `Retry-After` on a 503).
    public var retryAfterSeconds: Int?
    public var headers: HTTPFields
    public var underlying: (any Error)?

    public init(
        _ status: HTTPResponse.Status, _ code: String, _ message: String, extra: [String: JSONValue] = [:],
        retryAfterSeconds: Int? = nil, headers: HTTPFields = [:], underlying: (any Error)? = nil
    ) {
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
        self.retryAfterSeconds = retryAfterSeconds
        self.headers = headers
        self.underlying = underlying
    }

    public var description: String {
        var text = "\(status.code) \(code): \(message)"
        if let underlying { text += " (cause: \(underlying))" }
        return text
    }

    public var body: JSONValue {
        var fields = extra
        fields["status"] = "error"
        fields["error"] = .string(code)
        fields["message"] = .string(message)
        return .object(fields)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = self.headers
        headers[.contentType] = "application/json"
        if let retryAfterSeconds { headers[.retryAfter] = String(retryAfterSeconds) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body.encoded())))
    }

    // The errors every service shares.
    public static func badRequest(_ code: String, _ message: String, extra: [String: JSONValue] = [:]) -> ServiceError {
        ServiceError(.badRequest, code, message, extra: extra)
    }
    public static func notFound(_ message: String) -> ServiceError { ServiceError(.notFound, "not_found", message) }
    public static func conflict(_ code: String, _ message: String, extra: [String: JSONValue] = [:]) -> ServiceError {
        ServiceError(.conflict, code, message, extra: extra)
    }
    /// A dependency is down for now: 503 with `Retry-After`, so a client retries instead of giving up.
    public static func unavailable(_ code: String, _ message: String, retryAfterSeconds: Int = 1, underlying: (any Error)? = nil) -> ServiceError {
        ServiceError(.serviceUnavailable, code, message, retryAfterSeconds: retryAfterSeconds, underlying: underlying)
    }
}

