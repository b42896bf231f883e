"""Sample programs, registered through ``teleprompt.yaml`` exactly as a user's own programs are."""
