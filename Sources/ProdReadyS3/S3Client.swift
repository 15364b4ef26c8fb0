import ProdReadyCore
import ProdReadyHTTP
import AsyncHTTPClient
import NIOCore
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

/// Credentials and address of an S3-compatible store (path-style addressing, as MinIO and SeaweedFS expect).
public struct S3Configuration: Sendable {
    /// `http://host:port` or `https://host:port`, without a path.
    public var endpoint: String
    public var accessKey: String
    public var secretKey: String
    public var region: String

    public init(endpoint: String, accessKey: String, secretKey: String, region: String = "us-east-1") throws {
        guard endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
            throw ProdReadyError(.invalidArgument, "S3 endpoint must start with http:// or https://, got '\(redacted(endpoint))'")
        }
        var trimmed = endpoint
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let hostStart = trimmed.firstRange(of: "://")?.upperBound, !trimmed[hostStart...].isEmpty, !trimmed[hostStart...].contains("/") else {
            throw ProdReadyError(.invalidArgument, "S3 endpoint must be scheme://host[:port] with no path, got '\(redacted(endpoint))'")
        }
        guard !trimmed[hostStart...].contains("@") else {
            throw ProdReadyError(.invalidArgument, "S3 endpoint must not carry credentials; pass the access and secret key separately")
        }
        guard !accessKey.isEmpty, !secretKey.isEmpty else {
            throw ProdReadyError(.invalidArgument, "S3 access key and secret key must not be empty")
        }
        guard !region.isEmpty else { throw ProdReadyError(.invalidArgument, "S3 region must not be empty") }
        self.endpoint = trimmed
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.region = region
    }

    var hostHeader: String {
        String(endpoint[endpoint.firstRange(of: "://")!.upperBound...])
    }
}

/// When a PUT may replace what is stored.
public enum S3WriteCondition: Sendable, Equatable {
    /// Always (last writer wins).
    case unconditional
    /// Only if the key does not exist yet (`If-None-Match: *`): create-only, exactly one of concurrent writers wins.
    case ifAbsent
    /// Only if the stored object still has this ETag (`If-Match`): compare-and-swap.
    case ifMatch(etag: String)
}

/// A byte range of an object, as HTTP `Range` expresses it.
public enum S3ByteRange: Sendable, Equatable {
    /// Bytes `lowerBound...upperBound`, both inclusive.
    case bytes(ClosedRange<Int>)
    /// From `offset` to the end.
    case from(Int)
    /// The last `count` bytes.
    case suffix(Int)

    var header: String {
        switch self {
        case .bytes(let range): "bytes=\(range.lowerBound)-\(range.upperBound)"
        case .from(let offset): "bytes=\(offset)-"
        case .suffix(let count): "bytes=-\(count)"
        }
    }

    func validated() throws -> S3ByteRange {
        switch self {
        case .bytes(let range) where range.lowerBound < 0:
            throw ProdReadyError(.invalidArgument, "S3 byte range must start at 0 or later, got \(range)")
        case .from(let offset) where offset < 0:
            throw ProdReadyError(.invalidArgument, "S3 byte range offset must be 0 or more, got \(offset)")
        case .suffix(let count) where count <= 0:
            throw ProdReadyError(.invalidArgument, "S3 suffix range must ask for at least 1 byte, got \(count)")
        default:
            return self
        }
    }
}

/// A stored object, or the part of it a range asked for.
public struct S3Object: Sendable, Equatable {
    public var body: [UInt8]
    /// The object's ETag with its quotes removed (pass it to `.ifMatch`).
    public var etag: String
    /// The size of the whole object (not only of the range read).
    public var totalSize: Int

    public init(body: [UInt8], etag: String, totalSize: Int) {
        self.body = body
        self.etag = etag
        self.totalSize = totalSize
    }
}

/// What HEAD reports about an object.
public struct S3ObjectInfo: Sendable, Equatable {
    public var etag: String
    public var size: Int
    /// As the server sent it (RFC 1123).
    public var lastModified: String?
}

/// One entry of a listing.
public struct S3ObjectSummary: Sendable, Equatable {
    public var key: String
    public var size: Int
    public var etag: String
}

/// One page of ListObjectsV2.
public struct S3ListPage: Sendable, Equatable {
    public var objects: [S3ObjectSummary]
    /// Pass to the next call to continue; nil on the last page.
    public var nextContinuationToken: String?
    public var keys: [String] { objects.map(\.key) }
}

/// An S3 client: SigV4-signed requests over AsyncHTTPClient's shared client (which owns the connections, so
/// this value has no background work and no shutdown of its own).
///
/// Errors: 404 → `not_found`, 412 and 409 conditional conflicts → `precondition_failed`, 401/403 →
/// `access_denied`, 400/416 → `invalid_argument`, 5xx → retriable `server_error`, no answer → retriable
/// `connection_failed` or `timeout`. Messages carry S3's error code and message, never the credentials.
public struct S3Client: Sendable {
    public let configuration: S3Configuration
    private let signer: SigV4Signer
    private let timeout: Duration

    /// The largest object body read into memory; larger ones must be read in ranges.
    public static let maximumBodySize = 64 * 1024 * 1024

    public init(configuration: S3Configuration, timeout: Duration = .seconds(10)) {
        self.configuration = configuration
        self.signer = SigV4Signer(accessKey: configuration.accessKey, secretKey: configuration.secretKey, region: configuration.region)
        self.timeout = timeout
    }

    // MARK: - Buckets

    /// Creates `bucket`; creating one this account already owns succeeds.
    public func createBucket(_ bucket: String) async throws {
        // SeaweedFS answers a CreateBucket that races another one for the same name with 404 NoSuchBucket (seen
        // when an OMS deployment's processes start side by side): the bucket exists a moment later, or the
        // next try creates it.
        for attempt in 1...3 {
            let response = try await send("PUT", bucket: bucket, key: nil)
            if response.status == 409, response.errorCode == "BucketAlreadyOwnedByYou" { return }
            if response.status == 404, attempt < 3 {
                if try await bucketExists(bucket) { return }
                try await Task.sleep(for: .milliseconds(100 * attempt))
                continue
            }
            try response.expectSuccess("create bucket '\(bucket)'")
            return
        }
    }

    /// Whether `bucket` exists (and these credentials may see it).
    public func bucketExists(_ bucket: String) async throws -> Bool {
        let response = try await send("HEAD", bucket: bucket, key: nil)
        if response.status == 404 { return false }
        try response.expectSuccess("head bucket '\(bucket)'")
        return true
    }

    /// Deletes an empty bucket; deleting one that does not exist succeeds, a non-empty one is `precondition_failed`.
    public func deleteBucket(_ bucket: String) async throws {
        let response = try await send("DELETE", bucket: bucket, key: nil)
        if response.status == 404 { return }
        try response.expectSuccess("delete bucket '\(bucket)'")
    }

    // MARK: - Objects

    /// Stores an object and returns its new ETag. `.ifAbsent` and `.ifMatch` fail with `precondition_failed`
    /// when the condition does not hold (`.ifMatch` on a missing key: `not_found`, on every server).
    @discardableResult
    public func putObject(bucket: String, key: String, body: [UInt8], condition: S3WriteCondition = .unconditional, contentType: String? = nil) async throws -> String {
        var headers: [(String, String)] = []
        switch condition {
        case .unconditional: break
        case .ifAbsent: headers.append(("If-None-Match", "*"))
        case .ifMatch(let etag):
            guard !etag.isEmpty else { throw ProdReadyError(.invalidArgument, "If-Match needs an ETag") }
            headers.append(("If-Match", "\"\(Self.unquoted(etag))\""))
        }
        if let contentType { headers.append(("Content-Type", contentType)) }
        let response = try await send("PUT", bucket: bucket, key: key, headers: headers, body: body)
        if case .ifMatch = condition, response.status == 412 {
            // AWS and MinIO answer 404 when the key of an If-Match write does not exist; SeaweedFS answers 412. The
            // meaning callers act on differs (a missing key is not a lost race), so a 412 is told apart by a HEAD.
            // Between the two calls the key may appear or vanish; either answer is then one the server could have given.
            let exists = try await objectExists(bucket: bucket, key: key)
            if !exists { throw ProdReadyError(.notFound, "S3 put '\(bucket)/\(key)' with If-Match: no such key") }
        }
        try response.expectSuccess("put '\(bucket)/\(key)'")
        return Self.unquoted(response.header("etag") ?? "")
    }

    /// The object, or the `range` of it; `not_found` if there is none, `invalid_argument` for a range outside it.
    public func getObject(bucket: String, key: String, range: S3ByteRange? = nil) async throws -> S3Object {
        let headers = try range.map { [("Range", try $0.validated().header)] } ?? []
        let response = try await send("GET", bucket: bucket, key: key, headers: headers)
        try response.expectSuccess("get '\(bucket)/\(key)'\(range.map { " (\($0.header))" } ?? "")")
        var totalSize = response.bytes.count
        // Content-Range: bytes 0-9/443
        if let contentRange = response.header("content-range"), let slash = contentRange.lastIndex(of: "/"),
           let size = Int(contentRange[contentRange.index(after: slash)...]) {
            totalSize = size
        }
        return S3Object(body: response.bytes, etag: Self.unquoted(response.header("etag") ?? ""), totalSize: totalSize)
    }

    /// Size and ETag without the body; `not_found` if there is no such object.
    public func headObject(bucket: String, key: String) async throws -> S3ObjectInfo {
        let response = try await send("HEAD", bucket: bucket, key: key)
        try response.expectSuccess("head '\(bucket)/\(key)'")
        guard let length = response.header("content-length").flatMap({ Int($0) }) else {
            throw ProdReadyError(.protocolError, "S3 HEAD '\(bucket)/\(key)' answered without a Content-Length")
        }
        return S3ObjectInfo(etag: Self.unquoted(response.header("etag") ?? ""), size: length, lastModified: response.header("last-modified"))
    }

    /// Whether `key` exists in `bucket`.
    public func objectExists(bucket: String, key: String) async throws -> Bool {
        do {
            _ = try await headObject(bucket: bucket, key: key)
            return true
        } catch let error as ProdReadyError where error.code == .notFound {
            return false
        }
    }

    /// Deletes an object; deleting one that does not exist succeeds (as S3 itself answers).
    public func deleteObject(bucket: String, key: String) async throws {
        let response = try await send("DELETE", bucket: bucket, key: key)
        if response.status == 404, response.errorCode == "NoSuchKey" { return }
        try response.expectSuccess("delete '\(bucket)/\(key)'")
    }

    // MARK: - Listing

    /// One page of ListObjectsV2: keys under `prefix`, after `startAfter`, in UTF-8 binary order.
    public func listObjects(
        bucket: String,
        prefix: String = "",
        startAfter: String? = nil,
        continuationToken: String? = nil,
        maxKeys: Int = 1000
    ) async throws -> S3ListPage {
        guard (1...1000).contains(maxKeys) else { throw ProdReadyError(.invalidArgument, "S3 max-keys must be between 1 and 1000, got \(maxKeys)") }
        var query: [(String, String)] = [("list-type", "2"), ("max-keys", String(maxKeys))]
        if !prefix.isEmpty { query.append(("prefix", prefix)) }
        if let startAfter { query.append(("start-after", startAfter)) }
        if let continuationToken {
            guard !continuationToken.isEmpty else { throw ProdReadyError(.invalidArgument, "S3 continuation token must not be empty") }
            query.append(("continuation-token", continuationToken))
        }
        let response = try await send("GET", bucket: bucket, key: nil, query: query)
        try response.expectSuccess("list '\(bucket)'")
        let body = response.body
        let objects = try body.xmlValues(of: "Contents").map { entry in
            guard let key = entry.xmlValues(of: "Key").first.map(xmlUnescaped) else {
                throw ProdReadyError(.protocolError, "S3 listing of '\(bucket)' has an entry without a key")
            }
            return S3ObjectSummary(
                key: key,
                size: entry.xmlValues(of: "Size").first.flatMap { Int($0) } ?? 0,
                etag: Self.unquoted(xmlUnescaped(entry.xmlValues(of: "ETag").first ?? ""))
            )
        }
        let truncated = body.xmlValues(of: "IsTruncated").first == "true"
        let token = body.xmlValues(of: "NextContinuationToken").first.map(xmlUnescaped)
        if truncated && token == nil {
            throw ProdReadyError(.protocolError, "S3 listing of '\(bucket)' is truncated but has no continuation token")
        }
        return S3ListPage(objects: objects, nextContinuationToken: truncated ? token : nil)
    }

    /// Every key under `prefix` (after `startAfter`), following continuation tokens page by page.
    public func listKeys(bucket: String, prefix: String = "", startAfter: String? = nil) async throws -> [String] {
        var keys: [String] = []
        var token: String?
        repeat {
            let page = try await listObjects(bucket: bucket, prefix: prefix, startAfter: token == nil ? startAfter : nil, continuationToken: token)
            keys += page.keys
            token = page.nextContinuationToken
        } while token != nil
        return keys
    }

    // MARK: - Transport

    struct Response {
        var status: UInt
        var headers: HTTPHeaders
        var bytes: [UInt8]
        var body: String { String(decoding: bytes, as: UTF8.self) }
        var errorCode: String? { body.xmlValues(of: "Code").first }

        func header(_ name: String) -> String? { headers.first(name: name) }

        func expectSuccess(_ what: String) throws {
            guard !(200..<300).contains(status) else { return }
            let code = errorCode ?? "HTTP \(status)"
            let detail = body.xmlValues(of: "Message").first.map { "\(code): \(xmlUnescaped($0))" } ?? code
            let message = "S3 \(what): \(detail)"
            switch status {
            case 404: throw ProdReadyError(.notFound, message)
            case 412: throw ProdReadyError(.preconditionFailed, message)
            // A conditional write that raced another one on the same key; trying again re-evaluates the condition.
            case 409 where code == "ConditionalRequestConflict": throw ProdReadyError(.preconditionFailed, message, retriable: true)
            case 409 where code == "BucketNotEmpty": throw ProdReadyError(.preconditionFailed, message)
            case 401, 403: throw ProdReadyError(.accessDenied, message)
            case 400, 411, 413, 416: throw ProdReadyError(.invalidArgument, message)
            case 500...: throw ProdReadyError(.serverError, message, retriable: true)
            default: throw ProdReadyError(.serverError, message)
            }
        }
    }

    private func send(_ method: String, bucket: String, key: String?, query: [(String, String)] = [], headers: [(String, String)] = [], body: [UInt8] = []) async throws -> Response {
        guard Self.isValidBucketName(bucket) else {
            throw ProdReadyError(.invalidArgument, "invalid S3 bucket name '\(bucket)': 3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit")
        }
        if let key {
            guard !key.isEmpty, key.utf8.count <= 1024 else {
                throw ProdReadyError(.invalidArgument, "S3 object key must be 1 to 1024 bytes of UTF-8, got \(key.utf8.count)")
            }
            // XML 1.0 cannot carry most control characters, so such a key could be written but never listed.
            guard !key.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" && $0 != "\n" && $0 != "\r" }) else {
                throw ProdReadyError(.invalidArgument, "S3 object key must not contain control characters")
            }
        }
        var path = "/" + bucket
        if let key { path += "/" + SigV4Signer.uriEncode(key, keepSlash: true) }
        let payloadHash = SigV4Signer.hexSHA256(body)
        let signedHeaders = headers + [("host", configuration.hostHeader)]
        let authHeaders = signer.signatureHeaders(
            method: method, path: path, query: query, headers: signedHeaders, payloadHash: payloadHash, date: Int(time(nil))
        )
        let queryString = query.map { "\(SigV4Signer.uriEncode($0.0))=\(SigV4Signer.uriEncode($0.1))" }.joined(separator: "&")
        var request = HTTPClientRequest(url: configuration.endpoint + path + (queryString.isEmpty ? "" : "?" + queryString))
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in headers + authHeaders { request.headers.add(name: name, value: value) }
        if !body.isEmpty || method == "PUT" {
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let what = "S3 \(method) \(path) at \(configuration.endpoint)"
        do {
            let response = try await HTTPClients.failingFast.execute(request, timeout: .milliseconds(timeout.wholeMilliseconds))
            let buffer = try await response.body.collect(upTo: Self.maximumBodySize)
            return Response(status: response.status.code, headers: response.headers, bytes: Array(buffer.readableBytesView))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            throw ProdReadyError(.timeout, "\(what) got no answer within \(timeout)", retriable: true, underlying: error)
        } catch let error as NIOTooManyBytesError {
            throw ProdReadyError(.invalidArgument, "\(what): the body is larger than \(Self.maximumBodySize) bytes; read it in ranges", underlying: error)
        } catch {
            throw ProdReadyError(.connectionFailed, "\(what) failed: \(error)", retriable: true, underlying: error)
        }
    }

    static func isValidBucketName(_ name: String) -> Bool {
        func isLetterOrDigit(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }
        let bytes = Array(name.utf8)
        guard (3...63).contains(bytes.count), isLetterOrDigit(bytes.first!), isLetterOrDigit(bytes.last!) else { return false }
        return bytes.allSatisfy { isLetterOrDigit($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }
    }

    static func unquoted(_ etag: String) -> String {
        var text = Substring(etag)
        if text.hasPrefix("W/") { text = text.dropFirst(2) }
        while text.first == "\"" { text.removeFirst() }
        while text.last == "\"" { text.removeLast() }
        return String(text)
    }
}

extension String {
    /// Inner text of every `<tag>…</tag>` element, in order (enough for S3's XML answers, whose elements of one
    /// name never nest).
    func xmlValues(of tag: String) -> [String] {
        var values: [String] = []
        var rest = self[...]
        while let open = rest.firstRange(of: "<\(tag)>"), let close = rest[open.upperBound...].firstRange(of: "</\(tag)>") {
            values.append(String(rest[open.upperBound..<close.lowerBound]))
            rest = rest[close.upperBound...]
        }
        return values
    }
}

/// Replaces XML's five named entities and numeric character references.
func xmlUnescaped(_ text: String) -> String {
    guard text.contains("&") else { return text }
    var result = ""
    var rest = Substring(text)
    while let ampersand = rest.firstIndex(of: "&") {
        result += rest[..<ampersand]
        guard let semicolon = rest[ampersand...].firstIndex(of: ";") else { break }
        let entity = rest[rest.index(after: ampersand)..<semicolon]
        let replacement: String? = switch entity {
        case "amp": "&"
        case "lt": "<"
        case "gt": ">"
        case "quot": "\""
        case "apos": "'"
        default:
            if entity.hasPrefix("#x"), let value = UInt32(entity.dropFirst(2), radix: 16), let scalar = Unicode.Scalar(value) {
                String(Character(scalar))
            } else if entity.hasPrefix("#"), let value = UInt32(entity.dropFirst()), let scalar = Unicode.Scalar(value) {
                String(Character(scalar))
            } else {
                nil
            }
        }
        if let replacement {
            result += replacement
            rest = rest[rest.index(after: semicolon)...]
        } else {
            result.append("&")
            rest = rest[rest.index(after: ampersand)...]
        }
    }
    return result + rest
}
