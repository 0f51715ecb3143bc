// A backend's visit through Segment's own Node SDK (@segment/analytics-node), pointed at Pulse:
// browse anonymously, log in, buy; then flush and close. Run by
// tests/integration/test_segment_node.py with NODE_PATH set to the cached SDK's node_modules.
// argv[2]: JSON {"host", "key", "anon", "user"}. Prints JSON {"sent", "responses", "errors"};
// exits 1 when the SDK reported an error.
'use strict'
const { Analytics } = require('@segment/analytics-node')

const { host, key, anon, user } = JSON.parse(process.argv[2])
const analytics = new Analytics({
  writeKey: key,
  host,
  path: '/segment/v1/batch',
  flushAt: 4, // two batches: the visit spans requests, as a busy service's would
  flushInterval: 1000,
  maxRetries: 2,
})
const errors = []
const responses = []
analytics.on('error', (err) => errors.push(String(err && (err.reason || err.code || err))))
analytics.on('http_response', (r) => responses.push(r.status))

const context = {
  ip: '81.2.69.160', // GB; used for the country, never stored
  userAgent:
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 ' +
    '(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
  page: {
    url: 'https://shop.example/p/sku-1?utm_source=news&utm_medium=email',
    referrer: 'https://mail.example/',
  },
  campaign: { source: 'news', medium: 'email', name: 'spring' },
}
const products = [
  { product_id: 'sku-1', category: 'shoes', price: 59.9, quantity: 1 },
  { product_id: 'sku-2', category: 'socks', price: 4.5, quantity: 2 },
]

analytics.page({ anonymousId: anon, name: 'Product', properties: { path: '/p/sku-1' }, context })
analytics.track({
  anonymousId: anon,
  event: 'Product Viewed',
  properties: { product_id: 'sku-1', category: 'shoes', price: 59.9, currency: 'EUR' },
  context,
})
analytics.track({
  anonymousId: anon,
  event: 'Product Added',
  properties: { product_id: 'sku-1', price: 59.9, currency: 'EUR' },
  context,
})
analytics.identify({ userId: user, anonymousId: anon, traits: { email: 'u@example.com' }, context })
analytics.track({
  userId: user,
  anonymousId: anon,
  event: 'Checkout Started',
  properties: { value: 68.9, currency: 'EUR', products },
  context,
})
analytics.track({
  userId: user,
  anonymousId: anon,
  event: 'Order Completed',
  properties: { order_id: `o-${user}`, currency: 'EUR', products },
  context,
})

analytics
  .closeAndFlush({ timeout: 30000 })
  .then(() => {
    process.stdout.write(JSON.stringify({ sent: 6, responses, errors }) + '\n')
    process.exitCode = errors.length ? 1 : 0
  })
  .catch((err) => {
    process.stdout.write(JSON.stringify({ sent: 6, responses, errors: [...errors, String(err)] }) + '\n')
    process.exitCode = 1
  })
