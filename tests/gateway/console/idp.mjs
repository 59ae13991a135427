// The company IdP people sign in to the console with: panva's node-oidc-provider (OpenID
// Certified) with a public client for the console (authorization code flow, PKCE required)
// and its built-in sign-in form. Each person's groups and roles come from the accounts
// file, and the provider signs them into the ID token as preferred_username, groups and
// roles, as a company IdP does after a sign-in. First-party client: no consent screen.
//
//   node idp.mjs PORT REDIRECT_URI ACCOUNTS_JSON   -> prints "ready <issuer>" once listening
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const redirectUri = process.argv[3];
const accounts = JSON.parse(readFileSync(process.argv[4], 'utf8')); // {user: {groups: [], roles: []}}
const issuer = `http://127.0.0.1:${port}`;
const SCOPE = 'openid profile';

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'carafe-console',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [redirectUri],
  }],
  pkce: { required: () => true },
  claims: { openid: ['sub'], profile: ['preferred_username', 'groups', 'roles'] },
  conformIdTokenClaims: false, // the profile claims go into the ID token itself
  features: { devInteractions: { enabled: true } }, // the provider's own sign-in form
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => ({
      sub: id,
      preferred_username: id,
      groups: (accounts[id] || {}).groups || [],
      roles: (accounts[id] || {}).roles || [],
    }),
  }),
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(SCOPE);
    grant.addOIDCClaims(['preferred_username', 'groups', 'roles']);
    await grant.save();
    return grant;
  },
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
