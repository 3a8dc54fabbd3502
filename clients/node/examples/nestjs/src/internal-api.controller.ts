// A stub of the internal API that vamu-tasks' workers call (docs/openapi/internal-api.json),
// serving the bundled sample users and events. It answers as the contract says, so vamu-tasks
// can run against a real NestJS app (VAMU_API_BASE_URL pointing here) before the real
// endpoints exist; replace the samples with your own data, keep the shapes.
//
// The types and samples come from `vamu-tasks contracts openapi` (internal-api.types.ts and
// internal-api.samples.ts); a drift from the pydantic models fails that command's --check.
import { timingSafeEqual } from 'node:crypto';

import {
  BadRequestException,
  CanActivate,
  Controller,
  ExecutionContext,
  Get,
  Injectable,
  NotFoundException,
  Param,
  Query,
  UnauthorizedException,
  UseGuards,
} from '@nestjs/common';

import { SAMPLE_EVENTS, SAMPLE_USERS } from './internal-api.samples.js';
import type {
  Event,
  EventSearchParam,
  EventSearchQuery,
  EventSearchResult,
  UserContext,
} from './internal-api.types.js';

// The search's defaults and bounds, as in the OpenAPI file.
const DEFAULT_LIMIT = 10;
const MAX_LIMIT = 50;
const DEFAULT_RADIUS_KM = 25;
const EARTH_RADIUS_KM = 6371.0088;
// RFC 3339 date-time: `from` and `to` carry an offset (JavaScript would read a time without one
// as local time).
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i;

// A Map, not the object: an id such as "constructor" must not find Object.prototype's.
const USERS = new Map<string, UserContext>(Object.entries(SAMPLE_USERS));

/**
 * `Authorization: Bearer <token>`, where the token is the one vamu-tasks has as
 * VAMU_API_TOKEN (this app reads it from its own VAMU_API_TOKEN). Anything else is a 401,
 * `{"statusCode": 401, "message": "Unauthorized"}`, which vamu-tasks does not retry.
 */
@Injectable()
export class InternalTokenGuard implements CanActivate {
  private readonly token = Buffer.from(process.env.VAMU_API_TOKEN ?? '', 'utf8');

  canActivate(context: ExecutionContext): boolean {
    const request = context
      .switchToHttp()
      .getRequest<{ headers: Record<string, string | string[] | undefined> }>();
    const header = request.headers['authorization'];
    const [scheme = '', credentials = ''] = (typeof header === 'string' ? header : '').split(' ', 2);
    const given = Buffer.from(credentials.trim(), 'utf8');
    const valid =
      this.token.length > 0 && // no token configured: nobody gets in
      scheme.toLowerCase() === 'bearer' &&
      given.length === this.token.length &&
      timingSafeEqual(given, this.token);
    if (!valid) throw new UnauthorizedException();
    return true;
  }
}

@Controller('internal')
@UseGuards(InternalTokenGuard)
export class InternalApiController {
  @Get('users/:userId/context')
  userContext(@Param('userId') userId: string): UserContext {
    const user = USERS.get(userId);
    // vamu-tasks fails inspiration and chat jobs as user_not_found on this 404.
    if (user === undefined) throw new NotFoundException('User not found');
    return user;
  }

  // Declared before `events/:id`, which would otherwise take "search" for an event id.
  @Get('events/search')
  searchEvents(@Query() query: EventSearchQuery): EventSearchResult {
    const search = parseSearch(query);
    const found = SAMPLE_EVENTS.filter((event) => matches(search, event)).sort(
      (a, b) => Date.parse(a.startsAt) - Date.parse(b.startsAt),
    );
    return { events: found.slice(0, search.limit) };
  }

  @Get('events/:id')
  event(@Param('id') id: string): Event {
    const event = SAMPLE_EVENTS.find((candidate) => candidate.id === id);
    if (event === undefined) throw new NotFoundException('Event not found');
    return event;
  }
}

interface Search {
  q?: string;
  centre?: { lat: number; lng: number };
  radiusKm: number;
  from?: number;
  to?: number;
  limit: number;
}

// What a ValidationPipe would say, as one 400 listing every problem.
function parseSearch(query: EventSearchQuery): Search {
  const problems: string[] = [];
  const lat = numberParam(query, 'lat', problems, { low: -90, high: 90 });
  const lng = numberParam(query, 'lng', problems, { low: -180, high: 180 });
  const radiusKm = numberParam(query, 'radiusKm', problems, {});
  const limit = numberParam(query, 'limit', problems, { low: 1, high: MAX_LIMIT, integer: true });
  if (radiusKm !== undefined && radiusKm <= 0) problems.push('radiusKm must be a positive number');
  if ((param(query, 'lat') === undefined) !== (param(query, 'lng') === undefined)) {
    problems.push('lat and lng must be given together');
  }
  if (radiusKm !== undefined && param(query, 'lat') === undefined && param(query, 'lng') === undefined) {
    problems.push('radiusKm requires lat and lng');
  }
  const from = timeParam(query, 'from', problems);
  const to = timeParam(query, 'to', problems);
  if (problems.length > 0) throw new BadRequestException(problems);
  return {
    q: param(query, 'q'),
    centre: lat !== undefined && lng !== undefined ? { lat, lng } : undefined,
    radiusKm: radiusKm ?? DEFAULT_RADIUS_KM,
    from,
    to,
    limit: limit ?? DEFAULT_LIMIT,
  };
}

// Express turns `?q=a&q=b` into an array whatever the type says: the last one counts, and an
// empty value counts as absent.
function param(query: EventSearchQuery, name: EventSearchParam): string | undefined {
  const raw: unknown = query[name];
  const value = Array.isArray(raw) ? raw[raw.length - 1] : raw;
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function numberParam(
  query: EventSearchQuery,
  name: EventSearchParam,
  problems: string[],
  bounds: { low?: number; high?: number; integer?: boolean },
): number | undefined {
  const raw = param(query, name);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value)) {
    problems.push(`${name} must be a number conforming to the specified constraints`);
    return undefined;
  }
  if (bounds.integer && !Number.isInteger(value)) problems.push(`${name} must be an integer number`);
  if (bounds.low !== undefined && value < bounds.low) problems.push(`${name} must not be less than ${bounds.low}`);
  if (bounds.high !== undefined && value > bounds.high) {
    problems.push(`${name} must not be greater than ${bounds.high}`);
  }
  return value;
}

function timeParam(query: EventSearchQuery, name: EventSearchParam, problems: string[]): number | undefined {
  const raw = param(query, name);
  if (raw === undefined) return undefined;
  const time = DATE_TIME.test(raw) ? Date.parse(raw) : Number.NaN;
  if (Number.isNaN(time)) {
    problems.push(`${name} must be a valid ISO 8601 date string`);
    return undefined;
  }
  return time;
}

function matches(search: Search, event: Event): boolean {
  if (search.q !== undefined) {
    const needle = search.q.toLowerCase();
    const fields = [event.title, event.category, event.venue, event.city];
    if (!fields.some((field) => field.toLowerCase().includes(needle))) return false;
  }
  if (search.centre !== undefined) {
    const distance = haversineKm(search.centre.lat, search.centre.lng, event.lat, event.lng);
    if (distance > search.radiusKm) return false;
  }
  const startsAt = Date.parse(event.startsAt);
  if (search.from !== undefined && startsAt < search.from) return false;
  return search.to === undefined || startsAt <= search.to;
}

function haversineKm(lat1: number, lng1: number, lat2: number, lng2: number): number {
  const rad = Math.PI / 180;
  const dPhi = (lat2 - lat1) * rad;
  const dLambda = (lng2 - lng1) * rad;
  const a =
    Math.sin(dPhi / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLambda / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.sqrt(Math.min(1, a)));
}
