// A real OpenID Connect provider for end-to-end tests, built on the `oidc-provider` package.
//
// Usage: node tests/idp/server.mjs CONFIG.json   (run with cwd at the repository root)
//
// CONFIG.json:
//   {"port": N, "issuer": "http://127.0.0.1:N",
//    "clients": [{"client_id", "client_secret", "redirect_uris": [...]}],
//    "users": {"<login>": {"sub", "email", "preferred_username", "name", "groups": [...]}}}
//
// Serves plain HTTP on 127.0.0.1. Everything under /interaction/ is this script's own sign-in
// page: a login form that accepts any password for a known login and refuses unknown logins,
// and automatic consent to the requested scopes. Every other path is oidc-provider itself:
// discovery, authorization, token (client_secret_basic and client_secret_post), userinfo, jwks.
// Prints "READY <issuer>" once listening; exits 0 on SIGTERM or SIGINT.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { port, issuer } = config;

const users = new Map(); // login -> account
const accounts = new Map(); // sub -> account
// A user's "userinfo_sub" makes userinfo name that sub instead (a provider that contradicts its ID token);
// "email_verified" overrides the default (verified when there is an email).  The users are read again from
// CONFIG.json whenever it changes, so a test can change a person's claims between two logins.
let usersMtime = 0;
function loadUsers() {
  const mtime = statSync(process.argv[2]).mtimeMs;
  if (mtime === usersMtime) return;
  usersMtime = mtime;
  users.clear();
  accounts.clear();
  for (const [login, profile] of Object.entries(JSON.parse(readFileSync(process.argv[2], 'utf8')).users ?? {})) {
    const account = { preferred_username: login, groups: [], ...profile, sub: String(profile.sub ?? login) };
    users.set(login, account);
    accounts.set(account.sub, account);
  }
}
loadUsers();

const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
const hour = 60 * 60;

const provider = new Provider(issuer, {
  clients: config.clients.map((client) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    // oidc-provider accepts client_secret_post and client_secret_basic alike for either method.
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  })),
  jwks: { keys: [{ ...signingKey, use: 'sig', alg: 'RS256', kid: 'test-signing-key' }] },
  // How clients may authenticate at the token endpoint (and what discovery lists); oidc-provider's default otherwise.
  ...(config.clientAuthMethods ? { clientAuthMethods: config.clientAuthMethods } : {}),
  cookies: {
    keys: [randomBytes(32).toString('hex')],
    // Plain http: cookies are only marked Secure on https requests, and SameSite=None needs Secure.
    long: { httpOnly: true, sameSite: 'lax', signed: true },
    short: { httpOnly: true, sameSite: 'lax', signed: true },
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // Scope-requested claims go into the ID token as well as userinfo.
  conformIdTokenClaims: false,
  async findAccount(ctx, sub) {
    loadUsers();
    const account = accounts.get(sub);
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims(use) {
        const { userinfo_sub: userinfoSub, email_verified: verified, ...claims } = account;
        return {
          ...claims,
          email_verified: verified ?? Boolean(account.email),
          ...(use === 'userinfo' && userinfoSub ? { sub: String(userinfoSub) } : {}),
        };
      },
    };
  },
  // PKCE (S256) is accepted from every client but only required from public ones.
  pkce: { methods: ['S256'], required: (ctx, client) => client.clientAuthMethod === 'none' },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: {
    AccessToken: hour, AuthorizationCode: 60, Grant: hour, IdToken: hour,
    Interaction: hour, RefreshToken: 24 * hour, Session: 24 * hour,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', Object.entries(out).map(([k, v]) => `<p><b>${esc(k)}</b>: ${esc(v)}</p>`).join(''));
  },
});

// Static clients are otherwise only validated on first use; fail at startup instead.
for (const { client_id: clientId } of config.clients) {
  try {
    if (!await provider.Client.find(clientId)) throw new Error('not found');
  } catch (err) {
    console.error(`client ${clientId} is invalid: ${err.message} ${err.error_description ?? ''}`);
    process.exit(1);
  }
}

for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error', 'introspection.error']) {
  provider.on(event, (ctx, err) => console.error(`${event}: ${err.name}: ${err.message} ${err.error_description ?? ''}`));
}

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head>`
    + `<body><h1>${esc(title)}</h1>${body}</body></html>`;
}

function loginPage(uid, { login = '', error = '' } = {}) {
  return page('Sign-in', `${error ? `<p class="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
  <label>Login <input type="text" name="login" value="${esc(login)}" required autofocus></label>
  <label>Password <input type="password" name="password" required></label>
  <button type="submit">Sign in</button>
</form>`);
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Grants exactly what the authorization request asked for, then resumes it.
async function consent(req, res, { prompt: { details }, params, session, grantId }) {
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, page('Error', '<p>interaction mismatch</p>'));
  const { name } = details.prompt;

  if (req.method === 'GET' && !action) {
    if (name === 'login') return send(res, 200, loginPage(uid));
    if (name === 'consent') return consent(req, res, details);
    return send(res, 501, page('Error', `<p>unsupported prompt ${esc(name)}</p>`));
  }
  if (req.method === 'POST' && action === 'login' && name === 'login') {
    const form = await readForm(req);
    loadUsers();
    const login = form.get('login') ?? '';
    const account = users.get(login);
    if (!account) return send(res, 401, loginPage(uid, { login, error: `Unknown user: ${login}` }));
    return provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
  }
  return send(res, 405, page('Error', '<p>method not allowed</p>'));
}

const oidc = provider.callback();
const server = createServer((req, res) => {
  const match = /^\/interaction\/([^/?]+)(?:\/([^/?]+))?(?:\?.*)?$/.exec(req.url);
  if (!match) return oidc(req, res);
  return interaction(req, res, match[1], match[2]).catch((err) => {
    console.error(`interaction error: ${err.name}: ${err.message}`);
    if (!res.headersSent) send(res, 400, page('Error', `<p>${esc(err.message)}</p>`));
    else res.end();
  });
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
