public import Hummingbird
public import HTTPTypes
public import Logging
public import Prometheus
import Foundation

/// Request counts and latency per route, method and status, in the registry `/metrics` emits. Libraries'
/// swift-metrics (breakers, relays) land in the same registry when the process bootstraps its factory.
public struct HTTPMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    static let buckets: [Duration] = [.milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5)]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    func record(route: String, method: String, status: Int, duration: Duration) {
        registry.makeCounter(name: "http_requests_total", labels: [("route", route), ("method", method), ("status", String(status))]).increment()
        registry.makeDurationHistogram(name: "http_request_duration_seconds", labels: [("route", route), ("method", method)], buckets: Self.buckets).record(duration)
    }
}

/// The outermost layer of every request: the request id (a caller's `X-Request-ID` when it is sane, else a new
/// one), every error turned into the JSON error body (unknown routes 404, known paths with another method 405,
/// oversize bodies 413, anything unexpected a 500 that names the request id), metrics and one log line.
struct EdgeMiddleware: RouterMiddleware {
    typealias Context = ServiceRequestContext
    let metrics: HTTPMetrics
    let logger: Logger
    let routes: @Sendable () -> [RouteDocument]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let requestID = Self.acceptableRequestID(request.headers[.requestID]) ?? UUID().uuidString.lowercased()
        context.requestID = requestID
        let clock = ContinuousClock()
        let started = clock.now
        var response: Response
        var failure: String?
        do {
            response = try await next(request, context)
        } catch let error as ServiceError {
            response = try error.response(from: request, context: context)
            failure = error.description
        } catch let error as HTTPError {
            let mapped = mapFrameworkError(error, request: request)
            response = try mapped.response(from: request, context: context)
            failure = mapped.description
        } catch {
            let mapped = ServiceError(.internalServerError, "internal_error", "the request failed unexpectedly; quote request id \(requestID)", underlying: error)
            response = try mapped.response(from: request, context: context)
            failure = "\(error)"
        }
        response.headers[.requestID] = requestID
        let route = context.endpointPath ?? "unmatched"
        metrics.record(route: route, method: request.method.rawValue, status: response.status.code, duration: clock.now - started)
        var line: Logger.Metadata = ["request_id": "\(requestID)", "method": "\(request.method.rawValue)", "path": "\(request.uri.path)", "status": "\(response.status.code)"]
        if let failure, response.status.code >= 500 { line["error"] = "\(failure)" }
        logger.log(level: response.status.code == 500 ? .error : response.status.code >= 500 ? .warning : .info, "request", metadata: line)
        return response
    }

    private func mapFrameworkError(_ error: HTTPError, request: Request) -> ServiceError {
        switch error.status {
        case .notFound:
            let allowed = routes().filter { Self.matches(template: $0.path, path: request.uri.path) }.map(\.method.rawValue)
            if !allowed.isEmpty {
                return ServiceError(.methodNotAllowed, "method_not_allowed", "\(request.method.rawValue) is not allowed on \(request.uri.path); allowed: \(allowed.joined(separator: ", "))", headers: [.allow: allowed.joined(separator: ", ")])
            }
            return ServiceError(.notFound, "route_not_found", "no route \(request.method.rawValue) \(request.uri.path)")
        case .contentTooLarge:
            return ServiceError(.contentTooLarge, "payload_too_large", "the request body is larger than \(ServiceRequestContext.maximumBodySize) bytes")
        default:
            let code = error.status.reasonPhrase.lowercased().replacingOccurrences(of: " ", with: "_")
            return ServiceError(error.status, code.isEmpty ? "http_\(error.status.code)" : code, error.body ?? error.status.reasonPhrase)
        }
    }

    static func matches(template: String, path: String) -> Bool {
        let wanted = template.split(separator: "/")
        let given = path.split(separator: "/")
        guard wanted.count == given.count else { return false }
        return zip(wanted, given).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
    }

    /// A caller's request id is echoed only when it is short and plain, so it cannot inject into logs or headers.
    static func acceptableRequestID(_ value: String?) -> String? {
        guard let value, (1...128).contains(value.utf8.count),
            value.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) && $0.isASCII || "-_.:".unicodeScalars.contains($0) })
        else { return nil }
        return value
    }
}

extension HTTPField.Name {
    public static let requestID = HTTPField.Name("X-Request-ID")!
}
