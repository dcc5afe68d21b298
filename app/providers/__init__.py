"""Provider accounts and the cloud-liveness adapters (Adyen, Stripe)."""
