public import Hummingbird
import Foundation
public import Logging
import Synchronization

/// A service's request context: the request id it answers with and, on protected routes, who is calling.
public struct ServiceRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var requestID = ""
    public var identity: ServiceIdentity?
    /// Bodies over 1 MiB are refused with 413 before anything is decoded.
    public static let maximumBodySize = 1 << 20

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }

    public var maxUploadSize: Int { Self.maximumBodySize }

    /// The verified identity; only routes registered without a role have none.
    public func caller() throws(ServiceError) -> ServiceIdentity {
        guard let identity else { throw TokenAuthority.unauthorized("a bearer token is required (Authorization: Bearer <token>)") }
        return identity
    }

    /// A path parameter, which the route guarantees to exist.
    public func parameter(_ name: String) -> String { parameters.get(name) ?? "" }
}

/// One documented query parameter.
public struct QueryParameter: Sendable {
    public var name: String
    public var schema: JSONValue
    public var required: Bool
    public var summary: String
    public init(_ name: String, _ schema: JSONValue, required: Bool = false, summary: String = "") {
        self.name = name
        self.schema = schema
        self.required = required
        self.summary = summary
    }
}

/// What the OpenAPI document says of one route.
public struct RouteDocument: Sendable {
    public var method: HTTPRequest.Method
    /// OpenAPI form: `/api/v1/things/{id}`.
    public var path: String
    public var summary: String
    /// nil: open to everyone (health, metrics, the document itself).
    public var role: ServiceRole?
    public var query: [QueryParameter]
    public var requestBody: JSONValue?
    /// Status code → description.
    public var responses: [Int: String]
    /// An example request the route answers without a 404/405 (the OpenAPI test calls it).
    public var pathParameters: [String] {
        path.split(separator: "/").compactMap { segment in
            segment.hasPrefix("{") && segment.hasSuffix("}") ? String(segment.dropFirst().dropLast()) : nil
        }
    }
}

public typealias ServiceHandler = @Sendable (Request, ServiceRequestContext) async throws -> Response

/// The only way a service adds routes: each one is registered with Hummingbird and documented in the same call,
/// so the OpenAPI document cannot miss a route, and the role a route needs is checked before its handler runs.
public final class ServiceRouter {
    public let router: Router<ServiceRequestContext>
    /// Shared with the edge middleware and the OpenAPI route, which outlive this builder inside the application.
    let registry = RouteRegistry()
    public var documents: [RouteDocument] { registry.documents }
    public let title: String
    public let version: String
    let authority: TokenAuthority
    let metrics: HTTPMetrics

    public init(title: String, version: String = "1.0.0", authority: TokenAuthority, metrics: HTTPMetrics, logger: Logger) {
        self.title = title
        self.version = version
        self.authority = authority
        self.metrics = metrics
        router = Router(context: ServiceRequestContext.self)
        router.add(middleware: EdgeMiddleware(metrics: metrics, logger: logger, routes: { [registry] in registry.documents }))
        add(.get, "/openapi.json", summary: "This OpenAPI 3.1 document", role: nil, responses: [200: "the document"]) { [registry] _, _ in
            Response.json(registry.openAPIDocument(title: title, version: version))
        }
        add(.get, "/metrics", summary: "Prometheus text format", role: nil, responses: [200: "metrics"]) { _, _ in
            var buffer: [UInt8] = []
            metrics.registry.emit(into: &buffer)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }
    }

    /// Called when a route that needs a role refuses a request (401 or 403), before the error is answered: where a
    /// service audits refused attempts. Set it before adding routes; each route keeps the one set when it was added.
    public var onRefused: (@Sendable (RefusedRequest) async -> Void)?

    /// Adds a route. `path` uses OpenAPI's `{name}` for parameters; `role` nil leaves it open.
    public func add(
        _ method: HTTPRequest.Method, _ path: String, summary: String, role: ServiceRole?, query: [QueryParameter] = [],
        body: JSONValue? = nil, responses: [Int: String], handler: @escaping ServiceHandler
    ) {
        registry.append(RouteDocument(method: method, path: path, summary: summary, role: role, query: query, requestBody: body, responses: responses))
        let hummingbirdPath = path.split(separator: "/").map { segment in
            segment.hasPrefix("{") && segment.hasSuffix("}") ? ":" + segment.dropFirst().dropLast() : String(segment)
        }.joined(separator: "/")
        let authority = self.authority
        let onRefused = self.onRefused
        router.on(RouterPath("/" + hummingbirdPath), method: method) { request, context -> Response in
            var context = context
            if let role {
                let identity: ServiceIdentity
                do {
                    identity = try await authority.identity(authorization: request.headers[.authorization])
                } catch {
                    await onRefused?(RefusedRequest(method: method, route: path, path: request.uri.path, status: 401, error: error, identity: nil, requestID: context.requestID))
                    throw error
                }
                guard identity.has(role) else {
                    let error = ServiceError(.forbidden, "forbidden", "this route needs the role '\(role)'; the token has \(identity.roles.sorted())")
                    await onRefused?(RefusedRequest(method: method, route: path, path: request.uri.path, status: 403, error: error, identity: identity, requestID: context.requestID))
                    throw error
                }
                context.identity = identity
            }
            return try await handler(request, context)
        }
    }

    /// The OpenAPI 3.1 document of every route added.
    public func openAPIDocument() -> JSONValue { registry.openAPIDocument(title: title, version: version) }
}

/// The documented routes, filled while a service is assembled and read while it serves.
final class RouteRegistry: Sendable {
    private let routes = Mutex<[RouteDocument]>([])
    var documents: [RouteDocument] { routes.withLock { $0 } }
    func append(_ route: RouteDocument) { routes.withLock { $0.append(route) } }

    func openAPIDocument(title: String, version: String) -> JSONValue {
        let documents = self.documents
        var paths: [String: JSONValue] = [:]
        for route in documents {
            var operation: [String: JSONValue] = [
                "summary": .string(route.summary),
                "operationId": .string(route.method.rawValue.lowercased() + route.path.replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "{", with: "").replacingOccurrences(of: "}", with: "")),
            ]
            var parameters: [JSONValue] = route.pathParameters.map { ["name": .string($0), "in": "path", "required": true, "schema": ["type": "string"]] }
            parameters += route.query.map { ["name": .string($0.name), "in": "query", "required": .bool($0.required), "schema": $0.schema, "description": .string($0.summary)] }
            if !parameters.isEmpty { operation["parameters"] = .array(parameters) }
            if let body = route.requestBody {
                operation["requestBody"] = ["required": true, "content": ["application/json": ["schema": body]]]
            }
            var responses: [String: JSONValue] = [:]
            for (code, description) in route.responses { responses[String(code)] = ["description": .string(description)] }
            let errorBody: JSONValue = ["$ref": "#/components/schemas/Error"]
            for (code, description) in Self.commonErrors(route) where responses[String(code)] == nil {
                responses[String(code)] = ["description": .string(description), "content": ["application/json": ["schema": errorBody]]]
            }
            operation["responses"] = .object(responses)
            if let role = route.role {
                operation["security"] = [["bearer": []]]
                operation["x-required-role"] = .string(role.rawValue)
            }
            var item = paths[route.path]?.objectValue ?? [:]
            item[route.method.rawValue.lowercased()] = .object(operation)
            paths[route.path] = .object(item)
        }
        return [
            "openapi": "3.1.0",
            "info": ["title": .string(title), "version": .string(version)],
            "paths": .object(paths),
            "components": [
                "securitySchemes": ["bearer": ["type": "http", "scheme": "bearer", "bearerFormat": "JWT"]],
                "schemas": [
                    "Error": [
                        "type": "object", "required": ["status", "error", "message"],
                        "properties": ["status": ["const": "error"], "error": ["type": "string"], "message": ["type": "string"]],
                    ]
                ],
            ],
        ]
    }

    static func commonErrors(_ route: RouteDocument) -> [(Int, String)] {
        var errors: [(Int, String)] = []
        if route.requestBody != nil || !route.query.isEmpty { errors.append((400, "bad input")) }
        if route.requestBody != nil { errors.append((413, "body over 1 MiB")) }
        if route.role != nil { errors += [(401, "missing or invalid token"), (403, "the token lacks the role")] }
        return errors
    }
}

extension Response {
    /// A JSON response with a status (200 unless said).
    public static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: value.encoded())))
    }

    /// Any Encodable as JSON.
    public static func json(encoding value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }
}

extension Request {
    /// Reads the body (at most 1 MiB, else 413) and decodes it, turning every way it can be wrong into a 400 that
    /// names the field: malformed JSON, a missing field, a wrong type.
    public func decodeJSON<Value: Decodable>(_ type: Value.Type, context: ServiceRequestContext) async throws -> Value {
        let buffer: ByteBuffer
        do {
            buffer = try await body.collect(upTo: context.maxUploadSize)
        } catch {
            throw ServiceError(.contentTooLarge, "payload_too_large", "the request body is larger than \(context.maxUploadSize) bytes")
        }
        guard buffer.readableBytes > 0 else { throw ServiceError.badRequest("malformed_json", "the request body is empty; a JSON object is expected") }
        do {
            return try JSONDecoder().decode(Value.self, from: Data(buffer.readableBytesView))
        } catch let error as DecodingError {
            throw ServiceError.badRequest(DecodingProblem(error).code, DecodingProblem(error).message, extra: DecodingProblem(error).field.map { ["field": .string($0)] } ?? [:])
        } catch let error as ServiceError {
            throw error
        }
    }

    /// A query parameter parsed as an integer; absent gives nil, anything else not an integer is a 400.
    public func integerQuery(_ name: String, range: ClosedRange<Int> = 0...Int.max) throws(ServiceError) -> Int? {
        guard let raw = uri.queryParameters[name[...]] else { return nil }
        guard let value = Int(raw), range.contains(value) else {
            throw ServiceError.badRequest("invalid_parameter", "the query parameter '\(name)' must be an integer in \(range.lowerBound)...\(range.upperBound), got '\(raw)'", extra: ["field": .string(name)])
        }
        return value
    }
}

/// A JSON decoding failure said in terms of the request: which field, and what was wrong with it.
struct DecodingProblem {
    var code: String
    var message: String
    var field: String?

    init(_ error: DecodingError) {
        func path(_ codingPath: [any CodingKey]) -> String? {
            let text = codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
            return text.isEmpty ? nil : text
        }
        switch error {
        case .keyNotFound(let key, let context):
            field = path(context.codingPath + [key])
            code = "missing_field"
            message = "the field '\(field ?? key.stringValue)' is required"
        case .typeMismatch(let type, let context):
            field = path(context.codingPath)
            code = "invalid_field"
            message = "the field '\(field ?? "(body)")' must be \(Self.describe(type))"
        case .valueNotFound(let type, let context):
            field = path(context.codingPath)
            code = "invalid_field"
            message = "the field '\(field ?? "(body)")' must be \(Self.describe(type)), not null"
        case .dataCorrupted(let context):
            field = path(context.codingPath)
            if let field {
                code = "invalid_field"
                message = "the field '\(field)' is invalid: \(context.debugDescription)"
            } else {
                code = "malformed_json"
                message = "the request body is not valid JSON"
            }
        @unknown default:
            code = "malformed_json"
            message = "the request body could not be read"
        }
    }

    static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type: "an integer"
        case is Double.Type: "a number"
        case is Bool.Type: "a boolean"
        default:
            "\(type)".hasPrefix("Array") ? "an array" : "\(type)".hasPrefix("Dictionary") ? "an object" : "a \(type)"
        }
    }
}

/// A request a route refused for want of a valid token (401) or of its role (403).
public struct RefusedRequest: Sendable {
    public var method: HTTPRequest.Method
    /// The route's template, `/api/v1/instances/{db}/…`.
    public var route: String
    /// The path as requested.
    public var path: String
    public var status: Int
    public var error: any Error
    /// Who asked, when the token was valid (403).
    public var identity: ServiceIdentity?
    public var requestID: String
}
